# Two commands set everything up on a fresh machine (Python 3.11):
#   make serve   create .venv if missing, start the MONAI Label server on the sample studies
#   make test    create .venv if missing, run the whole test suite
PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
DEVICE ?= auto
STUDIES ?= sample-data/studies
STAMP := $(VENV)/.installed

.PHONY: serve test env clean-env

env: $(STAMP)

# requirements.lock pins every package of the environment and is installed with --no-deps, so pip
# resolves nothing: torch is the CPU build on this machine's disk (no multi-GB CUDA download), and
# monailabel's unused SAM2 dependency chain is left out (see the lock's header). --no-cache-dir keeps
# pip from copying every wheel into ~/.cache on a small disk.
$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version.split()[0]'
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --no-cache-dir --upgrade "pip==26.3"
	$(VENV)/bin/python -m pip install --quiet --no-cache-dir --no-deps -r requirements.lock
	$(VENV)/bin/python -m pip install --quiet --no-cache-dir --no-deps -e .
	$(VENV)/bin/python -c "import torch, monai, monailabel.main, qmri; print('environment ready: torch', torch.__version__, '| monai', monai.__version__)"
	touch $(STAMP)

# OpenMP threads sleep instead of spinning while they wait: two processes on the same cores (the
# server and a training it started, or parallel tests) then share them instead of slowing each
# other 3.5x (experiments/threads/results.md)
export OMP_WAIT_POLICY ?= PASSIVE
# one glibc malloc arena: the server computes maps in worker threads, and with an arena per thread a
# 1 mm raw-QSM request took 38-40 s and 3.9 GB instead of 31-36 s and 3.5 GB (the README's numbers);
# it must be set before the process starts (mallopt at run time does not move existing arenas)
export MALLOC_ARENA_MAX ?= 1

serve: $(STAMP)
	@echo "qmri MONAI Label server: http://$(HOST):$(PORT)  (studies: $(STUDIES); Ctrl-C to stop)"
	PYTHONPATH=$(CURDIR)/apps/qmri $(VENV)/bin/python -m monailabel.main start_server --app apps/qmri --studies $(STUDIES) --host $(HOST) --port $(PORT) --conf device $(DEVICE) --uvicorn_app lib.server.asgi:app

test: $(STAMP)
	$(VENV)/bin/ruff check lib apps tests slicer_extension
	$(VENV)/bin/ruff format --check lib apps tests slicer_extension
	$(VENV)/bin/python -m pytest

clean-env:
	rm -rf $(VENV)
