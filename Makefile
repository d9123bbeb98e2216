# mdn-experiments: every target runs from the repository root and sets itself up.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0
ARGS ?=
# MNIST's four files: MNIST_ROOT=FOLDER, else ../shared/data/mnist/raw when it holds them, else
# data/mnist (downloaded there when the network allows)
SHARED_MNIST := $(abspath ../shared/data/mnist/raw)
ifneq ($(MNIST_ROOT),)
export MDN_MNIST_ROOT := $(abspath $(MNIST_ROOT))
else ifneq ($(wildcard $(SHARED_MNIST)/train-images-idx3-ubyte.gz),)
export MDN_MNIST_ROOT ?= $(SHARED_MNIST)
endif
# The UCI suite's folders: UCI_ROOT=FOLDER, else ../shared/data/uci when it holds them, else data/uci
SHARED_UCI := $(abspath ../shared/data/uci)
ifneq ($(UCI_ROOT),)
export MDN_UCI_ROOT := $(abspath $(UCI_ROOT))
else ifneq ($(wildcard $(SHARED_UCI)/concrete/data.txt),)
export MDN_UCI_ROOT ?= $(SHARED_UCI)
endif

.DEFAULT_GOAL := help
.PHONY: help install test test-all test-cluster lint docs docs-reports run sweep reproduce uci table-defaults bench init-study clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: this takes the local CPU wheel; an unpinned torch pulls GBs of CUDA
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) ## create .venv with the pinned CPU torch and the project (editable, dev extras)
	@# the project's bytecode, kept beside its sources: each command's processes then read it instead
	@# of compiling 15 000 lines each (about 80 ms a process where PYTHONDONTWRITEBYTECODE=1 stops
	@# Python from keeping it). Up to date it costs 40 ms; an edited module is recompiled here or in memory.
	@$(BIN)/python -m compileall -q mdn_experiments

test: install ## the quick tier: tests/unit and a few command-line smoke tests (a couple of minutes)
	$(BIN)/python -m pytest -m "unit or quick" -q -n auto --durations=10

test-all: install ## everything else: tests/integration, the commands end to end (CI runs it after make test)
	$(BIN)/python -m pytest tests/integration -m "not unit and not quick and not cluster" -q -n auto --durations=10

SLURM_DIR ?= /tmp/mdn-slurm-test
test-cluster: install ## bring up a throwaway one-node SLURM (root, apt), run the cluster tests, tear it down
	@tests/integration/cluster/slurm-up.sh $(SLURM_DIR) || { echo "make test-cluster: no cluster, no cluster tests (see the line above)" >&2; exit 1; }
	@SLURM_CONF=$(SLURM_DIR)/slurm.conf $(BIN)/python -m pytest -m cluster -q tests/integration/cluster; status=$$?; \
	  tests/integration/cluster/slurm-down.sh $(SLURM_DIR); exit $$status

lint: install ## ruff: the lint rules and the formatting of pyproject.toml, on the whole tree (CI runs it)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

docs: install ## build the docs site strictly (a broken link or a missing page fails) into site/
	$(BIN)/python -m mkdocs build --strict

docs-reports: install ## the docs' results and performance pages from the newest make reproduce and make bench
	$(BIN)/python -m mdn_experiments.tools.publish

run: install ## one run: make run ARGS="K=5 seed=1"
	$(BIN)/mdn-run $(ARGS)

sweep: install ## sweep over K: make sweep ARGS="seed=0,1,2"
	$(BIN)/mdn-run -m K=1,2,3,4,5 $(ARGS)

reproduce: install ## every experiment with 3 seeds, then outputs/reproduce/REPORT.md; resumes a stopped one (FRESH=1: start anew)
	$(BIN)/python -m mdn_experiments.tools.reproduce $(if $(FRESH),--fresh)

uci: install ## the UCI suite (9 data sets, every standard split) beside MC dropout: outputs/uci/REPORT.md (QUICK=1: 3 splits each; FRESH=1)
	$(BIN)/python -m mdn_experiments.tools.uci $(if $(FRESH),--fresh) $(if $(QUICK),--quick) $(ARGS)

table-defaults: install ## dataset=table's defaults beside their K=1 foil and MSE network on five small tables (~1 min) -> outputs/table_defaults/REPORT.md
	$(BIN)/python -m mdn_experiments.tools.table_defaults $(ARGS)

bench: install ## speed benchmark (ratios side by side)
	$(BIN)/python -m mdn_experiments.tools.bench

init-study: install ## initialisation x revival study (toy K=3,5,10 and arm K=3, 3 seeds; ~10 min) -> outputs/init_study/
	$(BIN)/python -m mdn_experiments.tools.init_study

clean: ## remove the virtual environment and caches (keeps outputs/ and data/)
	rm -rf $(VENV) build *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
