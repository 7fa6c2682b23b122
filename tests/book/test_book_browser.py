"""The built book in a real browser: headless Debian Chromium driven by Playwright.

Run with ``make browser-test`` (builds the book first; sets ``DWP_BROWSER_TEST=1``). The test
serves ``_build/html`` (or ``$DWP_BOOK_HTML``) on 127.0.0.1 and opens every page with the
network cut off: any request that leaves localhost is aborted and reported. For every page:

- no console errors and no uncaught exceptions, no request to another host (offline book);
- every equation (``.math``) is typeset by the vendored MathJax, with no TeX error;
- every image has loaded (``naturalWidth > 0``);
- every link to a page of the book resolves, including its ``#fragment``;
- chapter pages have a Colab button whose path is a committed notebook of the configured
  repository and branch, and a download button offering the ``.ipynb``, which exists and
  starts with the ``dwp_lib`` install cell;
- every ``static-figure`` cell shows a loaded image, and widget outputs only appear in cells
  tagged ``widget`` (see ``tests/test_book_widgets.py``);
- nothing is cut at the right edge: at a 1280 px wide window no display equation and no cell
  output needs to scroll or is clipped, and each lies within the text column; at 400 px a long
  one scrolls inside its own box (``overflow-x: auto``), never clipped, and the page itself does
  not scroll sideways (``book/_static/book_html.css`` and ``book_html.js``);
- the page has a favicon that loads, and no request fails (no 404);
- the page's weight, the bytes of every request it makes with an empty cache, and its number of
  requests are printed, and the weight stays within ``PAGE_BUDGET_MB``.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HTML = Path(os.environ.get("DWP_BOOK_HTML", ROOT / "_build" / "html"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
COLAB = "https://colab.research.google.com/github/"
WIDE, NARROW = 1280, 400  # window widths (px): a laptop, a phone
#: A page's weight with an empty cache, in MB (10**6 bytes), as the test's server sends it
#: (uncompressed). The heaviest page of the tiny build, the experiment chapter, weighs 3.8 MB:
#: MathJax 1.2 MB, its figures 1.3 MB, the theme's CSS and icon fonts 0.7 MB, the page 0.4 MB.
PAGE_BUDGET_MB = float(os.environ.get("DWP_PAGE_BUDGET_MB", "4"))
REFRESH = re.compile(r'http-equiv="refresh" content="\d+;\s*url=([^"]+)"', re.I)

pytestmark = pytest.mark.skipif(
    os.environ.get("DWP_BROWSER_TEST") != "1",
    reason="needs the built book and Chromium: run `make browser-test`",
)

sys.path.insert(0, str(ROOT / "scripts"))
import make_notebooks  # noqa: E402


def pages() -> list[str]:
    skip = ("_static", "_sources", "_images")
    found = sorted(
        p.relative_to(HTML).as_posix()
        for p in HTML.rglob("*.html")
        if not p.relative_to(HTML).parts[0].startswith(skip)
    )
    return found or ["<the book is not built: run `make book`>"]


PAGES = pages()


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("id", "name") and value:
                self.ids.add(value)


@functools.cache
def ids_of(path: Path) -> frozenset[str]:
    parser = _Ids()
    parser.feed(path.read_text(errors="replace"))
    return frozenset(parser.ids)


@pytest.fixture(scope="module")
def server():
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `apt-get install chromium` or set $CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
        )
        yield context
        context.close()


@pytest.fixture(scope="module")
def repository():
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    org_repo = urlsplit(repo["url"]).path.strip("/").removesuffix(".git")
    return org_repo, repo.get("branch") or "main"


@functools.cache
def tracked_files() -> frozenset[str]:
    out = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return frozenset(out.splitlines())


CHAPTER_PAGES = {f"book/{md.stem}.html" for md in make_notebooks.chapters()}

# Collected in the page after load (and after MathJax finished typesetting).
INSPECT = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(img => { img.loading = "eager"; return img.decode().catch(() => {}); }));
  const math = Array.from(document.querySelectorAll(".math"));
  const cells = Array.from(document.querySelectorAll("div.cell"));
  const widgetView = "script[type='application/vnd.jupyter.widget-view+json']";
  return {
    title: document.title,
    math: math.length,
    untypeset: math.filter(m => !m.querySelector("mjx-container")).map(m => m.textContent.slice(0, 80)),
    texErrors: Array.from(document.querySelectorAll("mjx-merror")).map(e => e.textContent.slice(0, 80)),
    mathjaxLoaded: !!(window.MathJax && MathJax.version),
    brokenImages: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
    links: Array.from(document.querySelectorAll("a[href]")).map(a => a.href),
    colab: Array.from(document.querySelectorAll("a[href^='https://colab.research.google.com']")).map(a => a.href),
    downloads: Array.from(document.querySelectorAll(".dropdown-download-buttons a[href]")).map(a => a.href),
    icons: Array.from(document.querySelectorAll("link[rel~='icon'][href]")).map(l => l.href),
    cells: cells.map(c => ({
      widget: c.classList.contains("tag_widget"),
      static: c.classList.contains("tag_static-figure"),
      imgs: Array.from(c.querySelectorAll(".cell_output img")).map(i => i.naturalWidth),
      widgetOutputs: c.querySelectorAll(widgetView).length,
    })),
  };
}"""


# Display equations and cell outputs against the text column, at the window's current width.
# A target's boxes: itself, the boxes inside it that scroll or hold a table, and its wrapper
# (div.math, div.cell_output). `over`: a box whose content is wider than the box.
LAYOUT = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  // the book's script fits each box in the frame after its width changes
  for (let i = 0; i < 3; i++) await new Promise(r => requestAnimationFrame(r));
  await new Promise(r => setTimeout(r, 200));
  const article = document.querySelector("article.bd-article") || document.querySelector("main");
  const box = article.getBoundingClientRect(), pad = getComputedStyle(article);
  const left = box.left + parseFloat(pad.paddingLeft) - 1;
  const right = box.right - parseFloat(pad.paddingRight) + 1;
  const over = e => e.scrollWidth > e.clientWidth + 1;
  const overflow = e => getComputedStyle(e).overflowX;
  const describe = e => [e.tagName.toLowerCase(), ...Array.from(e.classList).slice(0, 2)].join(".");
  const targets = [];
  document.querySelectorAll("mjx-container[display='true']").forEach(e => {
    const eq = e.closest("div.math");
    const number = eq && eq.querySelector(".eqno");
    const name = number ? "equation " + number.textContent.replace("#", "").trim()
      : "equation " + JSON.stringify((eq || e).id || e.textContent.slice(0, 40));
    targets.push({name, el: e, boxes: [e, e.parentElement]});
  });
  const cells = Array.from(document.querySelectorAll("div.cell"));
  document.querySelectorAll("div.cell_output > .output").forEach(e => {
    const cell = cells.indexOf(e.closest("div.cell")) + 1;
    const name = `output of cell ${cell} ` + JSON.stringify(e.textContent.trim().slice(0, 40));
    const inner = e.querySelectorAll("pre, table, .pst-scrollable-table-container, div.highlight");
    targets.push({name, el: e, boxes: [e, ...inner, e.parentElement]});
  });
  const found = [];
  for (const t of targets) {
    if (!t.el.getClientRects().length) continue;  // hidden (a collapsed cell)
    if (t.el.closest("details:not([open])")) continue;  // folded away until the reader opens it
    const r = t.el.getBoundingClientRect();
    found.push({
      name: t.name,
      outside: r.left < left || r.right > right ? `${Math.round(r.left)}..${Math.round(r.right)} px, column ${Math.round(left)}..${Math.round(right)}` : null,
      over: t.boxes.filter(over).map(b => ({box: describe(b), overflow: overflow(b), width: b.clientWidth, content: b.scrollWidth})),
    });
  }
  return {pageWidth: document.documentElement.scrollWidth, window: innerWidth, targets: found};
}"""


#: Pages with a length budget at the wide window: chapter 5 tells one story (the search is the
#: reproduction log's).
PAGE_HEIGHT_BUDGET = {"book/05_experiment.html": 15_000}


def layout_problems(tab, width: int) -> list[str]:
    """What is cut or too wide at this window width (see LAYOUT)."""
    tab.set_viewport_size({"width": width, "height": 900})
    layout = tab.evaluate(LAYOUT)
    problems = []
    if layout["pageWidth"] > layout["window"] + 1:
        problems.append(
            f"at {width} px the page is {layout['pageWidth']} px wide: it scrolls sideways"
        )
    for t in layout["targets"]:
        at = f"at {width} px {t['name']}"
        if t["outside"]:
            problems.append(f"{at} sticks out of the text column ({t['outside']})")
        for b in t["over"]:
            what = f"{b['content']} px wide in {b['width']} px ({b['box']}, {b['overflow']})"
            if width >= WIDE:  # nothing needs to scroll
                problems.append(f"{at} does not fit: {what}")
            elif b["overflow"] not in ("auto", "scroll", "visible"):
                problems.append(f"{at} is clipped: {what}")
        if width < WIDE and t["over"]:
            if not any(b["overflow"] in ("auto", "scroll") for b in t["over"]):
                problems.append(f"{at} is wider than its box, and nothing scrolls it")
    return problems


def _local_file(url: str, base: str) -> tuple[Path, str] | None:
    """The built file a same-origin URL points to, and its fragment; None for other hosts."""
    if not url.startswith(base + "/"):
        return None
    parts = urlsplit(url)
    path = HTML / unquote(parts.path).lstrip("/")
    if path.is_dir():
        path = path / "index.html"
    return path, unquote(parts.fragment)


@pytest.mark.parametrize("page", PAGES)
def test_page(page, server, browser, repository, capsys):
    assert (HTML / page).is_file(), f"{HTML / page} is missing: run `make book`"
    problems: list[str] = []
    tab = browser.new_page()
    tab.set_viewport_size({"width": WIDE, "height": 900})
    # The page's weight: the bytes of every response (headers and body). Routing (below)
    # turns the HTTP cache off, so each page is weighed as a first visit.
    requests: list[str] = []
    received: list[int] = []
    failed: list[str] = []

    def weigh(r):
        sizes = r.sizes()
        received.append(max(0, sizes["responseHeadersSize"]) + max(0, sizes["responseBodySize"]))

    def fail(r):
        if r.url.startswith(server):  # remote requests are aborted on purpose, reported below
            failed.append(f"{r.failure} {r.url}")

    tab.on("request", lambda r: requests.append(r.url))
    tab.on("requestfinished", weigh)
    tab.on("requestfailed", fail)
    console: list[str] = []
    remote: list[str] = []
    tab.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: console.append(f"uncaught: {e}"))
    missing: list[str] = []
    tab.on("response", lambda r: missing.append(f"{r.status} {r.url}") if r.status >= 400 else None)

    def route(r):
        if r.request.url.startswith(server) or r.request.url.startswith(("data:", "blob:")):
            r.continue_()
        else:
            remote.append(f"{r.request.resource_type} {r.request.url}")
            r.abort()

    tab.route("**/*", route)
    redirect = REFRESH.search((HTML / page).read_text(errors="replace"))
    tab.goto(f"{server}/{page}", wait_until="load")
    if redirect:  # e.g. index.html -> book/intro.html: check the page it lands on
        target = (HTML / page).parent / redirect[1]
        assert target.is_file(), f"{page} redirects to {redirect[1]}, which is not built"
        tab.wait_for_url(f"{server}/{target.relative_to(HTML).as_posix()}")
        tab.wait_for_load_state("load")
    info = tab.evaluate(INSPECT)
    problems += layout_problems(tab, WIDE)
    height = tab.evaluate("document.documentElement.scrollHeight")
    if page in PAGE_HEIGHT_BUDGET and height > PAGE_HEIGHT_BUDGET[page]:
        problems.append(f"at {WIDE} px the page is {height:,} px tall, over its "
                        f"{PAGE_HEIGHT_BUDGET[page]:,} px: fold or move what the story does not need")  # fmt: skip
    problems += layout_problems(tab, NARROW)
    if not info["icons"]:
        problems.append("no favicon (<link rel='icon'>)")
    for url in info["icons"]:
        icon = tab.request.get(url)
        if not (icon.ok and icon.headers.get("content-type", "").startswith("image/")):
            problems.append(f"favicon {url}: {icon.status} {icon.headers.get('content-type')}")
    tab.wait_for_timeout(200)  # late console messages and requests
    tab.close()

    weight = sum(received) / 1e6
    with capsys.disabled():  # printed even when pytest captures the output
        print(f"\npage weight: {page} {weight:.2f} MB, {len(requests)} requests", end="")
    if weight > PAGE_BUDGET_MB:
        problems.append(f"weighs {weight:.2f} MB, over the budget of {PAGE_BUDGET_MB} MB")
    problems += [f"console error: {c}" for c in console]
    problems += [f"failed request: {m}" for m in missing]
    problems += [f"failed request: {m}" for m in failed]
    problems += [f"remote request (the book must work offline): {r}" for r in remote]
    if info["math"]:
        if not info["mathjaxLoaded"]:
            problems.append(f"{info['math']} equation(s) but MathJax did not load")
        problems += [f"equation not typeset: {m!r}" for m in info["untypeset"]]
        problems += [f"TeX error in equation: {m!r}" for m in info["texErrors"]]
    problems += [f"image did not load: {src}" for src in info["brokenImages"]]

    for url in info["links"]:
        target = _local_file(url, server)
        if target is None:
            continue
        path, fragment = target
        if not path.is_file():
            problems.append(f"broken link {url}: no {path.relative_to(HTML)}")
        elif fragment and path.suffix == ".html" and fragment not in ids_of(path):
            problems.append(f"broken link {url}: no id {fragment!r} in {path.relative_to(HTML)}")

    org_repo, branch = repository
    prefix = f"{COLAB}{org_repo}/blob/{branch}/"
    for url in set(info["colab"]):
        if not url.startswith(prefix):
            problems.append(f"Colab link {url} does not point into {org_repo} at {branch}")
            continue
        path = url.removeprefix(prefix)
        if not path.endswith(".ipynb"):
            problems.append(f"Colab link {url} opens {path}, not a notebook")
        elif path not in tracked_files():
            problems.append(f"Colab link {url}: {path} is not committed (run `make notebooks`)")
    ipynb = [u for u in info["downloads"] if u.split("#")[0].endswith(".ipynb")]
    for url in info["downloads"]:
        target = _local_file(url, server)
        if target is not None and not target[0].is_file():
            problems.append(f"download button {url}: no such file in the build")
    if page in CHAPTER_PAGES:
        if len(set(info["colab"])) != 1:
            problems.append(f"chapter page has {len(set(info['colab']))} Colab links, wants 1")
        if not ipynb:
            problems.append("chapter page offers no .ipynb download")
        for url in ipynb:
            target = _local_file(url, server)
            if target is not None and target[0].is_file():
                nb = nbformat.read(target[0], as_version=4)
                if not any(c.cell_type == "code" for c in nb.cells):
                    problems.append(f"downloadable {url} has no code cells")
                elif make_notebooks.INSTALL_TAG not in nb.cells[0].metadata.get("tags", []):
                    problems.append(f"downloadable {url} does not start with the install cell")

    cells = info["cells"]
    for i, cell in enumerate(cells):
        if cell["widgetOutputs"] and not cell["widget"]:
            problems.append(f"cell {i + 1} shows a widget but is not tagged 'widget'")
        if cell["static"] and not any(w > 0 for w in cell["imgs"]):
            problems.append(f"cell {i + 1} is tagged 'static-figure' but shows no loaded image")
        if cell["widget"]:
            near = [cells[j] for j in (i - 1, i + 1) if 0 <= j < len(cells)]
            if not any(n["static"] for n in near):
                problems.append(f"widget cell {i + 1} has no 'static-figure' cell beside it")
    assert not problems, f"{page}:\n  " + "\n  ".join(problems)


def test_every_chapter_page_was_built():
    missing = sorted(CHAPTER_PAGES - set(PAGES))
    assert not missing, f"chapters without a page in {HTML}: {missing} (run `make book`)"


# -- what a reader sees in the text: numbering, captions, no traces of the build -------------

#: words about how the book was made, or the build machine's paths: never on a page
MAKING_OF = re.compile(
    r"/root/|/home/\w|/tmp/|/work/|\.cache/dwp_lib|site-packages|\blent\b|\bprototype\b|"
    r"\bsession \d|\bissue \d+\b|\bthis session\b",
    re.I,
)


def _text(path: Path) -> str:
    html = path.read_text(errors="replace")
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S | re.I)
    body = html.split("<main", 1)[-1]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))


@pytest.mark.parametrize(
    "page", sorted(CHAPTER_PAGES | {"book/intro.html", "book/conclusion.html"})
)
def test_page_text_numbering_and_captions(page):
    path = HTML / page
    assert path.is_file(), f"{path} is missing: run `make book`"
    html = path.read_text(errors="replace")
    text = _text(path)
    problems = [f"shows {m.group(0)!r}: {text[max(0, m.start() - 60) : m.end() + 60]!r}"
                for m in MAKING_OF.finditer(text)]  # fmt: skip
    if page in CHAPTER_PAGES:
        chapter = int(Path(page).stem[:2])
        # every image a cell output shows is a numbered figure of this chapter with a caption
        outputs = re.findall(
            r'<div class="cell_output.*?(?=<div class="cell |</section>)', html, re.S
        )
        for out in outputs:
            for img in re.findall(r"<img\b[^>]*>", out):
                alt = re.search(r'alt="([^"]*)"', img)
                if not alt or len(alt[1].split()) < 4 or re.fullmatch(r"[0-9a-f]{16,}", alt[1]):
                    problems.append(f"output image without real alt text: {img[:120]}")
        numbers = re.findall(r'<span class="caption-number">Fig\. (\d+)\.(\d+) </span>', html)
        problems += [f"figure {c}.{k} numbered outside chapter {chapter}" for c, k in numbers
                     if int(c) != chapter]  # fmt: skip
        if not numbers:
            problems.append("no numbered figure on the page")
        # the exercises' own titles carry this chapter's number (Exercise 4.1, 4.2, ...)
        titles = re.findall(r'<span class="caption-number">Exercise (\d+)\.(\d+) ', html)
        if not titles:
            problems.append("no exercise numbered per chapter (Exercise N.k)")
        problems += [f"Exercise {c}.{k} titled on chapter {chapter}'s page" for c, k in titles
                     if int(c) != chapter]  # fmt: skip
        if re.search(r"\bexercise Exercise\b", text, re.I):
            problems.append("a cross-reference reads 'exercise Exercise'")
    assert not problems, f"{page}:\n  " + "\n  ".join(problems)
