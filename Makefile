# Two commands do all set-up on a fresh machine:
#   make book   builds the HTML book into _build/html (the venv is created on first use)
#   make test   lint + unit tests + every chapter executed under nbval at the tiny preset
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The pair known to install here (pip's cap on this machine); override on other machines.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.dwp-installed
CHAPTERS := $(sort $(wildcard book/0*.md))

.PHONY: all book test lint unit chapters installed-test student instructor notebooks colab-test browser-deps browser-test \
	clean distclean venv

all: book

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.[book,test]'
	@touch $@

book: $(STAMP)
	DWP_PROGRESS=0 $(VENV)/bin/jupyter-book build . -W -n --keep-going
	@echo "Book: $(CURDIR)/_build/html/index.html"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check dwp_lib tests studies benchmarks scripts conftest.py

# The unit tests on every core, each test file on one worker (its module fixtures built once);
# TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= auto
unit: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

chapters: $(STAMP)
	$(PY) scripts/run_chapters.py $(CHAPTERS) book/conclusion.md book/reproduction_log.md

test: lint unit chapters

# Every chapter under nbval against a plain (non-editable) install of this checkout, the way a
# reader's `pip install` gets it: the package and the committed results it ships (dwp_results).
INSTALLED := build/installed
installed-test: $(STAMP)
	rm -rf $(INSTALLED)
	$(PY) -m pip install -q --no-deps --no-build-isolation --target $(INSTALLED) . 2>/dev/null
	cd /tmp && PYTHONPATH=$(CURDIR)/$(INSTALLED) $(CURDIR)/$(PY) -c "import dwp_lib, dwp_results; \
	  assert '$(INSTALLED)/' in dwp_lib.__file__, dwp_lib.__file__; print('installed:', dwp_lib.__file__)"
	PYTHONPATH=$(CURDIR)/$(INSTALLED) $(PY) scripts/run_chapters.py --out _build/nbinstalled \
	  $(CHAPTERS) book/conclusion.md

student: $(STAMP)
	$(PY) scripts/make_student.py --out student $(CHAPTERS)

# The instructor's notebooks: the Colab ones with every solution kept (not committed).
instructor: $(STAMP)
	$(PY) scripts/make_student.py --solutions --out instructor $(CHAPTERS)

# The Colab notebooks book/0N_x.ipynb, generated from the chapters; commit them after a change
# (tests/test_book_notebooks.py fails while they differ).
notebooks: $(STAMP)
	$(PY) scripts/make_notebooks.py $(CHAPTERS) book/conclusion.md

# Each committed notebook run in a fresh venv that only its install cell sets up (minutes).
colab-test: $(STAMP)
	DWP_COLAB_TEST=1 $(PY) -m pytest -q -p no:cacheprovider tests/book/test_book_colab.py

# The built book in headless Chromium (Debian's; installed here if missing and we are root).
CHROMIUM ?= /usr/bin/chromium
browser-deps: $(STAMP)
	@test -x $(CHROMIUM) || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  { echo "browser-test needs Chromium: apt-get install chromium, or make CHROMIUM=/path"; exit 1; }
	@$(PY) -c "import playwright.sync_api" 2>/dev/null || $(PY) -m pip install --quiet -e '.[browser]'

browser-test: book browser-deps
	DWP_BROWSER_TEST=1 CHROMIUM=$(CHROMIUM) $(PY) -m pytest -q -p no:cacheprovider \
	  tests/book/test_book_browser.py

clean:
	rm -rf _build build .pytest_cache .ruff_cache student instructor

distclean: clean
	rm -rf $(VENV)
