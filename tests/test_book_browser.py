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
  tagged ``widget`` (see ``tests/test_book_widgets.py``).
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

ROOT = Path(__file__).resolve().parents[1]
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
    cells: cells.map(c => ({
      widget: c.classList.contains("tag_widget"),
      static: c.classList.contains("tag_static-figure"),
      imgs: Array.from(c.querySelectorAll(".cell_output img")).map(i => i.naturalWidth),
      widgetOutputs: c.querySelectorAll(widgetView).length,
    })),
  };
}"""


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
def test_page(page, server, browser, repository):
    assert (HTML / page).is_file(), f"{HTML / page} is missing: run `make book`"
    problems: list[str] = []
    tab = browser.new_page()
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
    tab.wait_for_timeout(200)  # late console messages
    tab.close()

    problems += [f"console error: {c}" for c in console]
    problems += [f"failed request: {m}" for m in missing]
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
