# Two commands do all the set-up: `make book` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
PROFILE ?= default

.PHONY: setup data browser widgets book chapters test mutate clean-book publish lab

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

# The widget JavaScript the built book serves itself (no CDN): require.js and the ipywidgets HTML manager, from npm.
HTML_MANAGER := 1.0.15
REQUIREJS    := 2.3.7
WIDGETS_JS   := book/_static/widgets/embed-amd.js

widgets: $(WIDGETS_JS)

$(WIDGETS_JS):
	@command -v npm >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  (apt-get install -y -qq npm >/dev/null || (apt-get update -qq && apt-get install -y -qq npm >/dev/null)); } || \
	  { echo "npm is missing: run 'sudo apt-get install npm' (it fetches the widget JavaScript the book serves)" >&2; exit 1; }
	mkdir -p .cache/npm book/_static/widgets
	cd .cache/npm && npm pack --silent @jupyter-widgets/html-manager@$(HTML_MANAGER) requirejs@$(REQUIREJS) >/dev/null
	tar xzf .cache/npm/requirejs-$(REQUIREJS).tgz -O package/require.js > book/_static/widgets/require.js.tmp
	tar xzf .cache/npm/jupyter-widgets-html-manager-$(HTML_MANAGER).tgz -O package/dist/embed-amd.js > $@.tmp
	mv book/_static/widgets/require.js.tmp book/_static/widgets/require.js
	mv $@.tmp $@

# Chapters whose executed notebook is up to date are skipped (`ctcbook run --force` re-executes); no pip when
# pyproject.toml has not changed (the $(STAMP) rule), no npm once the widget JavaScript is there.
chapters: setup
	$(VENV)/bin/ctcbook run --profile $(PROFILE)

book: chapters widgets
	$(VENV)/bin/ctcbook book --warnings-as-errors

# Copy the built book for any static host: make publish DEST=/srv/www/ctcbook
publish:
	$(VENV)/bin/ctcbook publish $(DEST)

test: setup browser widgets
	$(PY) -m pytest -q

# JupyterLab on notebooks/ with this project's kernel (.venv's python3, ipywidgets' JupyterLab extension included)
# and the book's run store, so a chapter opened there reuses the runs `make book` trained. LAB_PORT picks the port.
LAB_PORT ?= 8888
lab: setup
	CTCBOOK_RUNS="$${CTCBOOK_RUNS:-$(CURDIR)/runs}" $(VENV)/bin/jupyter lab --notebook-dir="$(CURDIR)/notebooks" \
	  --ServerApp.port=$(LAB_PORT) $$([ "$$(id -u)" = 0 ] && echo --allow-root)

# Known mistakes (tests/mutants/*.toml) put into a copy of the package one at a time: prints caught / not caught per
# mistake, fails if any is not caught. Minutes of CPU; not part of `make test`. Options: benchmarks/mutate.py --help.
mutate: setup
	$(PY) benchmarks/mutate.py

clean-book:
	rm -rf _build book/chapters
