# `make demo` and `make test` are the two commands a newcomer needs; both install first when needed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tsn-installed

.PHONY: install demo lint test bench clean

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

test: lint
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/tsn benchmark --tune-allocator

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .mypy_cache
