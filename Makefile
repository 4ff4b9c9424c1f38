# Two entry points (see README.md): `make run` and `make test`.
# Both create/refresh a local virtual environment first. TORCH pins the CPU build that
# installs from this machine's disk; GPU users override it, e.g. `make run TORCH=torch`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PIP := $(VENV)/bin/python -m pip

.PHONY: install run test bench clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[dev,tracks]"
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/genoformer pipeline

test: install
	$(VENV)/bin/python -m pytest -q

bench: install
	$(PIP) install -q -e ".[bench]"
	$(VENV)/bin/python bench/tokenizers.py
	$(VENV)/bin/python bench/reformer.py --quick

clean:
	rm -rf $(VENV) runs
