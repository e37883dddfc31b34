# Set-up and the everyday commands. Every target creates the environment first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo train serve test test-slow lint format bench s3-up s3-down clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of torch first: an unpinned torch would pull gigabytes of CUDA wheels.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

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
	rm -rf $(VENV) .mediascore .pytest_cache .ruff_cache
