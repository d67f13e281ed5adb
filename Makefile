# `make demo` and `make test` are the two commands a newcomer needs; both install first when needed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tsn-installed

.PHONY: install demo lint browser test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: install
	$(BIN)/tsn demo

# Lint (ruff: style, imports, likely bugs) and type-check (mypy, settings in pyproject.toml) before the tests.
lint: install
	$(BIN)/ruff check src tests benchmarks
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

test: lint browser
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/tsn benchmark --tune-allocator

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .mypy_cache
