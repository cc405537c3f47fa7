# Two entry points for people: `make demo` and `make test`. Everything else is a building block.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# cpu or gpu: which FAISS wheel to install (they provide the same module and must not coexist).
FAISS ?= cpu
STAMP := $(VENV)/.installed-$(FAISS)

.PHONY: install test lint unit bench-ftf clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch and torchvision first, as an exact pair: this machine ships these wheels on disk.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[$(FAISS),ray,dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(PY) -m pytest -q

test: lint unit

bench-ftf: $(STAMP)
	$(PY) -m bench.ftf_throughput

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
