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

.PHONY: all book test lint unit chapters student browser-test clean distclean venv

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
	$(VENV)/bin/ruff format --check dwp_lib tests benchmarks scripts

unit: $(STAMP)
	$(PY) -m pytest -q tests

chapters: $(STAMP)
	$(PY) scripts/run_chapters.py $(CHAPTERS)

test: lint unit chapters

student: $(STAMP)
	$(PY) scripts/make_student.py --out student $(CHAPTERS)

clean:
	rm -rf _build build .pytest_cache .ruff_cache student

distclean: clean
	rm -rf $(VENV)
