# Two commands on a fresh machine:  make demo   |   make test
# TORCH pins the wheel: a CPU build here; on a GPU box use e.g. TORCH="torch" (CUDA build).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench-ingest clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sportvlm demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -ra

lint: $(STAMP)
	$(BIN)/ruff check sportvlm_tui training tests benchmarks

bench-ingest: $(STAMP)
	$(BIN)/python benchmarks/bench_ingest.py

clean:
	rm -rf $(VENV) .pytest_cache sportvlm.db sportvlm.db-*
