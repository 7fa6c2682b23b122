"""Sphinx extension for the book's HTML: it works offline, nothing is cut off, pages stay light.

**Offline equations.** By default Sphinx loads MathJax from a CDN, so in a classroom without
internet the equations stay raw TeX. This extension vendors MathJax from npm (``MATHJAX``, an
exact version) into ``build/vendor/`` on first use (``npm install``, staged and renamed
atomically, so concurrent builds are safe), adds it to ``html_static_path`` and points
``mathjax_path`` at ``_static/mathjax/tex-chtml.js``; its fonts and TeX extensions load from
beside it. If npm is missing or fails, the build warns (``make book`` builds with ``-W``, so it
fails) rather than silently falling back to the CDN.

**No widget scripts.** On pages with ipywidgets, myst-nb loads require.js and the ipywidgets
HTML manager from CDNs. Vendoring them is not enough: html-manager 1.x calls MathJax 2's API
(``MathJax.Hub.Queue``) and throws under MathJax 3, and looks for its fonts under the page's
folder. So they are not loaded: a widget shows nothing in the HTML, and the static figure that
must sit beside it (``tests/test_book_widgets.py``) carries the idea.

**The downloadable notebook works in Colab.** The theme's download button offers the executed
notebook (``_sources/<page>.ipynb``); its first cell becomes the same ``dwp_lib`` install cell
as the committed Colab notebooks (``scripts/make_notebooks.py``), so an uploaded copy runs too.

**No duplicate scripts.** With jupyter-book 1.0.4, sphinx-thebe registers its inline
configuration script twice, so every page logs "Identifier 'THEBE_JS_URL' has already been
declared". Each page's script list is de-duplicated (first occurrence kept).

**Nothing cut at the right edge.** ``book/_static/book_html.css`` makes every display equation
and text output scroll inside its own box (the theme clipped long equations), and
``book/_static/book_html.js`` first fits them to the text column: a wide equation or output is
set a little smaller, and an output's long lines wrap where the column is wide enough for that.

**Light pages.** The theme loads ``fontawesome.js`` (1.5 MB) on every page only to redraw its
icons as SVG; its CSS already draws them with the Font Awesome web fonts, so
``templates/static/webpack-macros.html`` leaves the script out.

**A favicon** (``book/_static/favicon.svg``, a 3x3 convolution kernel; ``html.favicon`` in
``_config.yml``): without one every page asked for a missing ``favicon.ico``.

``test_book_browser.py`` checks all of this in headless Chromium: equations typeset, no
console errors, no request leaving localhost or failing, nothing clipped at 1280 px and long
boxes scrolling at 400 px, and each page's weight within its budget.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from sphinx.util import logging

ROOT = Path(__file__).resolve().parents[2]
MATHJAX = "mathjax@3.2.2"
VENDOR = ROOT / "build" / "vendor" / MATHJAX  # one folder per version: a bump vendors afresh
ENTRY = "mathjax/tex-chtml.js"
# What tex-chtml.js loads lazily (TeX extensions, fonts, accessibility, menu); not the other
# combined bundles, which the pages never ask for.
NEEDED = ("tex-chtml.js", "a11y", "adaptors", "input", "output", "sre", "ui")

# The book's own CSS, script and favicon; the template that leaves fontawesome.js out.
STATIC = ROOT / "book" / "_static"
TEMPLATES = Path(__file__).resolve().parent / "templates"

logger = logging.getLogger(__name__)


def vendor_mathjax(vendor: Path = VENDOR) -> Path:
    """Return the folder to add to ``html_static_path``, installing MathJax there if missing."""
    static = vendor / "static"
    if (static / ENTRY).is_file():
        return static
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not on PATH (install Node.js to build the book)")
    vendor.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=vendor.parent, prefix=".mathjax-") as tmp:
        cmd = [npm, "install", "--no-save", "--no-audit", "--no-fund", "--ignore-scripts"]
        done = subprocess.run(
            [*cmd, "--prefix", tmp, MATHJAX], capture_output=True, text=True, timeout=600
        )
        if done.returncode != 0:
            raise RuntimeError(f"npm install {MATHJAX} failed:\n{done.stderr}")
        es5 = Path(tmp) / "node_modules" / "mathjax" / "es5"
        stage = Path(tmp) / "stage"
        for name in NEEDED:
            src, dst = es5 / name, stage / "static" / "mathjax" / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
        try:
            os.rename(stage, vendor)
        except OSError:  # another build vendored it first
            if not (static / ENTRY).is_file():
                raise
    logger.info(f"book_html: vendored {MATHJAX} into {vendor}")
    return static


def _configure(app, config) -> None:
    if hasattr(config, "nb_ipywidgets_js"):
        config.nb_ipywidgets_js = {}
    config.templates_path = [str(TEMPLATES), *config.templates_path]
    config.html_static_path = [*config.html_static_path, str(STATIC)]
    try:
        static = vendor_mathjax()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
        logger.warning(
            f"book_html: could not vendor MathJax ({err}); the pages will load it from "
            f"{config.mathjax_path} and need internet for their equations"
        )
        return
    config.html_static_path = [*config.html_static_path, str(static)]
    config.mathjax_path = ENTRY


def _assets_outdated(app, env, added, changed, removed) -> list[str]:
    """Every page, when the book's CSS or script changed: Sphinx only copies static files when it
    writes a page, so a change to them alone would not reach the built book."""
    digest = hashlib.sha256()
    for path in sorted(STATIC.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    if getattr(env, "book_html_assets", None) == digest.hexdigest():
        return []
    env.book_html_assets = digest.hexdigest()
    return sorted(env.found_docs - added - changed)


def _dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    seen = set()
    unique = []
    for script in context.get("script_files", []):
        # the copies differ only in filename None vs "" (inline scripts)
        filename = getattr(script, "filename", script) or ""
        key = (str(filename), tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def _install_cell_in_download(app, pagename, templatename, context, doctree) -> None:
    if not context.get("ipynb_source"):
        return
    import nbformat

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import make_notebooks
    finally:
        sys.path.remove(str(ROOT / "scripts"))

    path = Path(app.outdir) / "_sources" / context["ipynb_source"]
    nb = nbformat.read(path, as_version=4)
    if nb.cells and make_notebooks.INSTALL_TAG in nb.cells[0].metadata.get("tags", []):
        return
    source = f"{pagename}{Path(app.env.doc2path(pagename)).suffix}"
    nb.cells.insert(0, make_notebooks.install_cell(make_notebooks.pip_requirement(), source))
    nbformat.write(nb, path)


#: Pages that run only from a checkout of the repository (they import the studies, which are not
#: installed): no Colab or Binder button, which would open a page that cannot run there.
CHECKOUT_ONLY = ("book/reproduction_log",)


def _no_launch_for_checkout_pages(app, pagename, templatename, context, doctree) -> None:
    if pagename in CHECKOUT_ONLY and "header_buttons" in context:
        context["header_buttons"] = [
            b for b in context["header_buttons"] if b.get("label") != "launch-buttons"
        ]


def setup(app):
    app.connect("config-inited", _configure)
    app.add_css_file("book_html.css")
    app.add_js_file("book_html.js", loading_method="defer")
    app.connect("env-get-outdated", _assets_outdated)
    # after sphinx-book-theme (priority 500) has copied the notebook and listed the scripts
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    app.connect("html-page-context", _install_cell_in_download, priority=900)
    app.connect("html-page-context", _no_launch_for_checkout_pages, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
