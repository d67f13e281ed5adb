# `make demo` and `make test` are the two commands a newcomer needs; both install first when needed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tsn-installed

.PHONY: install demo lint browser docs docs-serve wheel-check test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,docs]"
	touch $(STAMP)

demo: install
	$(BIN)/tsn demo

# Lint (ruff: style, imports, likely bugs) and type-check (mypy, settings in pyproject.toml) before the tests.
lint: install
	$(BIN)/ruff check src tests benchmarks .ci docs/_hooks
	$(BIN)/mypy src/tsn

# The headless browser of tests/serving/test_serve_browser.py: Debian's chromium and its chromedriver, installed
# with apt-get when /usr/bin/chromedriver is missing (as root, or through sudo); otherwise one line says how.
browser:
	@if [ -x /usr/bin/chromedriver ] && [ -x /usr/bin/chromium ]; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "make browser: no apt-get here; install chromium and chromedriver as /usr/bin/chromium and /usr/bin/chromedriver for the browser test"; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	elif command -v sudo >/dev/null 2>&1; then \
		sudo apt-get update -qq && sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else \
		echo "make browser: run 'apt-get install chromium chromium-driver' as root for the browser test"; \
	fi

# The documentation site (mkdocs.yml) into site/, strict: a broken link or anchor, a page missing from the navigation
# or an API reference to a name that no longer exists fails the build.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

docs-serve: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

# Build the sdist and the wheel, twine-check them, install the wheel into a fresh venv outside the checkout and use
# it from there: presets, a prediction, the page on loopback (.ci/wheel_check.py).
wheel-check: install
	$(BIN)/python .ci/wheel_check.py

test: lint browser docs wheel-check
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/tsn benchmark --tune-allocator

clean:
	rm -rf $(VENV) build dist site src/*.egg-info .pytest_cache .ruff_cache .mypy_cache
