# Quick start: `make demo` runs the whole job on generated demo data; `make test` runs the test suite.
# Both create .venv on first use and install what they need (torch pinned to 2.13.0; README: CPU-only and CUDA builds).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO := demo

OLDEST := .venv-oldest

.PHONY: install install-oldest demo test test-fast test-oldest test-trainers wheel-check lint clean

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
	@$(BIN)/python ci/versions.py "make test ($(VENV))"
	$(BIN)/python -m pytest -q

# The development loop: everything but the tests marked slow (real data sets, Ray clusters, trainers built and
# stepped, index training, route timing). CI runs `make test`, all of them.
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

# The same suite on the oldest supported releases (ci/constraints-oldest.txt: transformers, TRL,
# sentence-transformers, datasets, tokenizers, the ONNX stack).
install-oldest: $(OLDEST)/.installed

$(OLDEST)/.installed: pyproject.toml ci/constraints-oldest.txt
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/pip install --upgrade pip
	$(OLDEST)/bin/pip install torch==2.13.0
	$(OLDEST)/bin/pip install -e ".[cpu,dev]" -c ci/constraints-oldest.txt
	$(OLDEST)/bin/pip check
	touch $@

test-oldest: $(OLDEST)/.installed
	@$(OLDEST)/bin/python ci/versions.py "make test-oldest ($(OLDEST))"
	$(OLDEST)/bin/python -m pytest -q

# LLaMA-Factory and axolotl train on `tfpack export` output (tests/test_export_*.py), each in a venv of its own (their
# pins differ from .venv's and from each other's); torch stays the CPU wheel (ci/constraints-trainers.txt), and the
# CUDA-built torchvision LLaMA-Factory pulls in is removed (it fails to import: `torchvision::nms does not exist`).
LF_VENV := .venv-llamafactory
AX_VENV := .venv-axolotl

$(LF_VENV)/.installed: pyproject.toml ci/constraints-trainers.txt
	$(PYTHON) -m venv $(LF_VENV)
	$(LF_VENV)/bin/pip install torch==2.13.0
	$(LF_VENV)/bin/pip install -e ".[cpu,llamafactory]" -c ci/constraints-trainers.txt
	$(LF_VENV)/bin/pip uninstall -y torchvision
	touch $@

$(AX_VENV)/.installed: pyproject.toml ci/constraints-trainers.txt
	$(PYTHON) -m venv $(AX_VENV)
	$(AX_VENV)/bin/pip install torch==2.13.0
	$(AX_VENV)/bin/pip install -e ".[cpu,axolotl]" -c ci/constraints-trainers.txt
	touch $@

test-trainers: $(LF_VENV)/.installed $(AX_VENV)/.installed
	$(LF_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_export_llamafactory.py
	$(AX_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_export_axolotl.py

# The built wheel, installed non-editable in a fresh venv, runs embed -> pack -> stats --verify outside the repo.
wheel-check: install
	bash scripts/ci_wheel_check.sh $(BIN)/python

lint: install
	$(BIN)/ruff check tfpack tests scripts
	$(BIN)/ruff format --check tfpack tests scripts
	$(BIN)/mypy tfpack

clean:
	rm -rf $(DEMO) $(VENV) $(OLDEST) $(LF_VENV) $(AX_VENV)
