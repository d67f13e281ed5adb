# `make demo` and `make test` are the two commands a newcomer needs; both install first when needed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tsn-installed

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: install
	$(BIN)/tsn demo

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/tsn benchmark

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
