# Set-up and the everyday commands. Every target creates the environment first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
LOCK_VENV := .venv-lock
TORCH := 2.13.0

define LOCK_HEADER
# The lock: every distribution of the environment, direct and transitive, at the exact version CI tested.
# Written by `make lock` (a scratch venv, the CPU torch, then pyproject.toml's ranges resolved by pip); do not edit.
# torch is pinned without its local label (+cpu), which pip's == accepts: it takes the CPU build when one is offered.
endef
export LOCK_HEADER

.PHONY: install lock audit demo train serve test test-slow lint format bench s3-up s3-down clean

install: $(STAMP)

# A fresh environment from the lock whenever the lock or pyproject.toml changes: exactly what CI tested.
$(STAMP): pyproject.toml $(LOCK)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$$(grep '^pip==' $(LOCK))"
	$(BIN)/python -m pip install --quiet -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# Re-resolves pyproject.toml's ranges in a scratch environment and writes the lock (see README, "Installs").
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip setuptools
	# The CPU build of torch first: an unpinned torch would pull gigabytes of CUDA wheels.
	$(LOCK_VENV)/bin/python -m pip install --quiet torch==$(TORCH)
	$(LOCK_VENV)/bin/python -m pip install --quiet -e ".[dev]"
	{ echo "$$LOCK_HEADER"; $(LOCK_VENV)/bin/python -m pip freeze --all --exclude-editable \
		| sed -E 's/^(torch==[^+]+)[+].*/\1/'; } > $(LOCK)
	rm -rf $(LOCK_VENV)

# Known vulnerabilities of the locked versions, by pip-audit in a scratch venv (it asks PyPI's advisory data, so it
# needs that service). --strict fails when a package could not be audited: an unreachable service is no pass.
audit:
	rm -rf .venv-audit
	$(PYTHON) -m venv .venv-audit
	.venv-audit/bin/python -m pip install --quiet pip-audit
	grep -v '^#' $(LOCK) > .venv-audit/requirements.txt
	.venv-audit/bin/pip-audit --strict --no-deps --disable-pip --progress-spinner off -r .venv-audit/requirements.txt
	rm -rf .venv-audit

demo: install
	$(BIN)/mediascore demo

# Retrains the demo's checkpoints (checkpoints/*.pt, each with a .json saying how it was made) on the corpus.
train: install
	$(BIN)/mediascore train demo

# The HTTP API on 127.0.0.1:8000 with the demo's checkpoints (configs/serve.yaml); Ctrl-C stops it.
serve: install
	$(BIN)/mediascore serve --config configs/serve.yaml

test: install
	$(BIN)/python -m pytest

test-slow: install
	$(BIN)/python -m pytest -m slow

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python bench/ingest.py

s3-up: install
	$(BIN)/mediascore s3 up

s3-down: install
	$(BIN)/mediascore s3 down

clean:
	-$(BIN)/mediascore s3 down
	rm -rf $(VENV) $(LOCK_VENV) .mediascore .pytest_cache .ruff_cache
