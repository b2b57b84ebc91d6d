# Two commands do all the set-up: `make book` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
PROFILE ?= default

.PHONY: setup data browser book chapters test mutate clean-book

setup: $(STAMP) data

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Fashion-MNIST from Debian's package, unless $CTCBOOK_DATA already holds it.
data:
	@if [ -n "$${CTCBOOK_DATA:-}" ] && ls "$$CTCBOOK_DATA"/fashion-mnist/t10k-labels-idx1-ubyte* >/dev/null 2>&1; then \
	  echo "Fashion-MNIST: using $$CTCBOOK_DATA/fashion-mnist"; \
	elif [ -f $(FMNIST) ]; then \
	  echo "Fashion-MNIST: using /usr/share/datasets/fashion-mnist"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)); \
	else \
	  echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist' or put the idx files in \$$CTCBOOK_DATA/fashion-mnist" >&2; exit 1; \
	fi

# Headless Chromium and its WebDriver for the browser test of the built book (Debian packages).
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq chromium chromium-driver >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null)); \
	else \
	  echo "chromium/chromium-driver missing: the browser test will be skipped (sudo apt-get install chromium chromium-driver)" >&2; \
	fi

chapters: setup
	$(VENV)/bin/ctcbook run --profile $(PROFILE)

book: chapters
	$(VENV)/bin/ctcbook book --warnings-as-errors

test: setup browser
	$(PY) -m pytest -q

# Known mistakes (tests/mutants/*.toml) put into a copy of the package one at a time: prints caught / not caught per
# mistake, fails if any is not caught. Minutes of CPU; not part of `make test`. Options: benchmarks/mutate.py --help.
mutate: setup
	$(PY) benchmarks/mutate.py

clean-book:
	rm -rf _build book/chapters
