# peftlab — the workbook's everyday commands.
#
#   make lab         install (once), then open JupyterLab on notebooks/
#   make test        lint, unit + hygiene tests, the 2-rank torchrun check, every notebook under nbval, the nbgrader
#                    round trip of the graded edition, the browser test
#   make notebooks   re-execute every notebook in place (what gets committed)
#   make site        the course as static HTML in site/ (opens offline: site/index.html)
#   make assignments the graded (nbgrader) edition in assignments/ (docs/INSTRUCTORS.md)
#
# Without make: pip install -e ".[test]", then `jupyter lab notebooks/` or `pytest`.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
# The steps share two CPU cores: never run them side by side, even under `make -j`.
.NOTPARALLEL:

PYTHON ?= python3
# Installed before everything else. A looser spec lets pip pick a multi-GB CUDA build on Linux;
# elsewhere pass e.g. TORCH="torch --index-url https://download.pytorch.org/whl/cpu".
TORCH ?= torch==2.13.0
VENV ?= .venv
PY := $(VENV)/bin/python
JUPYTER := $(VENV)/bin/jupyter
STAMP := $(VENV)/.installed

# xdist workers for unit tests: 0 = one process (the timed full fine-tuning test expects both cores to itself).
JOBS ?= 0
# Seconds a single notebook cell may run before it counts as hung.
CELL_TIMEOUT ?= 600
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

NOTEBOOKS = $(shell find notebooks -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' | sort)
NBVAL_ARGS := --nbval-lax --nbval-current-env \
	--nbval-sanitize-with tests/nbval_sanitize.cfg \
	--nbval-cell-timeout $(CELL_TIMEOUT) --durations=20

.PHONY: help install lab lint test test-unit test-distributed test-notebooks test-browser test-assignments notebooks \
	site assignments clean

help:
	@echo "make lab         install, then open JupyterLab on notebooks/"
	@echo "make test        lint, unit + hygiene tests, the 2-rank check, all notebooks (nbval), nbgrader round trip, browser test"
	@echo "make test-distributed   2-rank torchrun job against 1 process (python -m peftlab.workbook.distributed --check)"
	@echo "make lint        ruff over the library, tests and benchmarks (rules in pyproject.toml)"
	@echo "make notebooks   re-execute every notebook in place, saving outputs"
	@echo "make site        the course as static HTML pages in site/ (open site/index.html, offline)"
	@echo "make assignments the graded edition: an nbgrader course root in assignments/ (docs/INSTRUCTORS.md)"
	@echo "make test-assignments   nbgrader round trip: solutions score full marks, blank releases zero (~9 min on 2 cores)"
	@echo "make install     create $(VENV) and install peftlab with its test extras"
	@echo "make clean       remove caches, checkpoints, artifacts/ and site/"

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install $(TORCH)
	$(PY) -m pip install -e ".[test]"
	touch $@

lab: $(STAMP)
	$(JUPYTER) lab $(ALLOW_ROOT) notebooks/

# -k: run every step even when one fails, so one run shows every problem; make still
# exits non-zero if any step failed.
test: $(STAMP)
	$(MAKE) --no-print-directory -k lint test-unit test-notebooks test-assignments test-browser

lint: $(STAMP)
	$(VENV)/bin/ruff check peftlab tests benchmarks conftest.py

test-unit: $(STAMP)
	$(PY) -m pytest tests/ -m "not browser and not assignments" -n $(JOBS)

test-notebooks: $(STAMP)
	$(PY) -m pytest $(NBVAL_ARGS) notebooks/

# Two torchrun ranks (gloo, CPU) against one process, data-parallel then fully sharded: the same adapter,
# or a non-zero exit (~20 s of CPU each).
# `make test` runs these same commands inside test-unit (tests/test_distributed.py, tests/test_distributed_fsdp.py).
test-distributed: $(STAMP)
	$(PY) -m peftlab.workbook.distributed --check
	$(PY) -m peftlab.workbook.distributed --fsdp --check

test-browser: $(STAMP)
	$(PY) -m pytest tests/ -m browser

# nbgrader's own commands on the graded edition: every notebook's reference solutions autograded to full
# marks, a representative few blank releases to zero (tests/test_assignments.py says which).
# Two autogrades at a time (-n 2: each worker builds its own course root): 8.5 min instead of 16 on 2 cores.
test-assignments: $(STAMP)
	$(PY) -m pytest tests/test_assignments.py -m assignments -n 2 --durations=0

# JUPYTER_PATH puts this venv's `python3` kernel ahead of any user-level kernelspec.
# record_timing=False keeps per-cell timestamps out of the committed files. A fresh progress file (the
# checkers' record) keeps the maintainer's own out of the outputs: notebook 00 shows what a new learner sees.
notebooks: $(STAMP)
	PEFTLAB_PROGRESS=$$(mktemp -d)/progress.json JUPYTER_PATH=$(VENV)/share/jupyter $(JUPYTER) nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.kernel_name=python3 \
		--ExecutePreprocessor.timeout=$(CELL_TIMEOUT) \
		--ExecutePreprocessor.record_timing=False \
		$(NOTEBOOKS)

# From the committed outputs; nothing is executed. New notebooks appear by themselves.
site: $(STAMP)
	$(PY) -m peftlab.course.site --notebooks notebooks --out site

# From the committed notebooks and their solutions; nothing is executed. Rewrites source/ and
# nbgrader_config.py only: a gradebook, releases and submissions already there stay.
assignments: $(STAMP)
	$(PY) -m peftlab.course assignments --out assignments

clean:
	rm -rf .pytest_cache artifacts site
	find . -path ./$(VENV) -prune -o -name .ipynb_checkpoints -type d -print0 | xargs -0 rm -rf
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf
