# Two entry points (README): `make run` (the default Bergwald scenario) and `make test`.
# Both create the virtual environment .venv on first use (Python 3.11 and a package index).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-slow bench evaluate clean-venv

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/flexcosim run scenarios/bergwald.toml

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/flexcosim bench

evaluate: $(STAMP)
	$(BIN)/flexcosim evaluate

clean-venv:
	rm -rf $(VENV)
