# Quick start: `make demo` runs the whole job on generated demo data; `make test` runs the test suite.
# Both create .venv on first use and install what they need (torch as the CPU wheel: see README for CUDA).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO := demo

.PHONY: install demo test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e ".[cpu,dev]"
	touch $@

demo: install
	$(BIN)/python scripts/make_demo_data.py --out $(DEMO)/data
	$(BIN)/tfpack embed $(DEMO)/data/*.jsonl $(DEMO)/data/*.json $(DEMO)/data/*.parquet -o $(DEMO)/run --overwrite
	$(BIN)/tfpack pack $(DEMO)/run -o $(DEMO)/packed --tokenizer packaged-minilm --max-len 1024 --overwrite
	$(BIN)/tfpack stats $(DEMO)/packed --verify --plot $(DEMO)/packed/stats.png
	@echo "demo finished: shards in $(DEMO)/packed/"

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check tfpack tests scripts
	$(BIN)/ruff format --check tfpack tests scripts
	$(BIN)/mypy tfpack

clean:
	rm -rf $(DEMO) $(VENV)
