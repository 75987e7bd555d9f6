# Two commands on a fresh machine: `make demo` and `make test` (both create .venv when missing).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNS ?= runs

.PHONY: setup demo test test-fast lint format bench wheel-check clean pi-test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# The main job end to end on the embedded digits dataset: train, then every later stage.
demo: $(STAMP)
	$(BIN)/keras-edge train digits-cnn --runs-dir $(RUNS) --force
	$(BIN)/keras-edge export $(RUNS)/digits-cnn --force
	$(BIN)/keras-edge predict $(RUNS)/digits-cnn/export/model-int8.tflite samples/digits/digit-3.png samples/digits/digit-7.png
	$(BIN)/keras-edge package $(RUNS)/digits-cnn --target raspberry-pi --force
	$(BIN)/python $(RUNS)/digits-cnn/bundles/raspberry-pi/run.py --selftest

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check toolkit tests samples bench
	$(BIN)/ruff format --check toolkit tests samples bench

format: $(STAMP)
	$(BIN)/ruff format toolkit tests samples bench
	$(BIN)/ruff check --fix toolkit tests samples bench

# The emulated Raspberry Pi proof: raspberry-pi bundles run under qemu-aarch64 on Debian bookworm
# arm64 (Raspberry Pi OS 64-bit); sysroot built once into ~/.cache/keras-edge/pi-sysroot.
pi-test: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_pi.py

bench: $(STAMP)
	$(BIN)/python bench/run.py --out bench/RESULTS.md

# Build the wheel, install it in a scratch venv, and use the installed CLI from elsewhere.
wheel-check: $(STAMP)
	bash bench/wheel_check.sh

clean:
	rm -rf build dist .pytest_cache $(RUNS)
