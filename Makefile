# Two commands on a fresh machine: `make demo` and `make test` (both create .venv when missing).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNS ?= runs

.PHONY: setup demo test test-fast lint format bench bench-scale bench-ptq bench-serve wheel-check clean pi-test openvino test-openvino

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

# One pytest worker per core, whole files per worker (module fixtures train once); the slowest
# tests are listed at the end of the log.
PYTEST_PAR = -n auto --dist loadfile --durations=15

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_PAR)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_PAR)

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

# ONNX Runtime's OpenVINO execution provider, in a venv of its own: onnxruntime-openvino and the
# plain onnxruntime wheel both own the `onnxruntime` module, so installing the extra next to the
# base dependency leaves plain onnxruntime's files on top. Remove that one, then lay the
# OpenVINO build back down; export and validate then run every ONNX artifact on OpenVINO too.
OV_VENV := .venv-openvino
OV_STAMP := $(OV_VENV)/.installed
OV_PIN := onnxruntime-openvino>=1.24.1,<1.25

$(OV_STAMP): pyproject.toml
	test -x $(OV_VENV)/bin/python || $(PYTHON) -m venv $(OV_VENV)
	$(OV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OV_VENV)/bin/python -m pip install --quiet -e ".[dev,openvino]"
	$(OV_VENV)/bin/python -m pip uninstall --quiet --yes onnxruntime
	$(OV_VENV)/bin/python -m pip install --quiet --force-reinstall --no-deps "$(OV_PIN)"
	$(OV_VENV)/bin/python -c "import onnxruntime as o, sys; p = o.get_available_providers(); \
		sys.exit(0 if 'OpenVINOExecutionProvider' in p else 'OpenVINO EP missing: %s' % p)"
	touch $(OV_STAMP)

openvino: $(OV_STAMP)

# The OpenVINO tests: real exports validated on the OpenVINO EP (they skip in the main venv).
test-openvino: $(OV_STAMP)
	$(OV_VENV)/bin/python -m pytest -q -m openvino tests

bench: $(STAMP)
	$(BIN)/python bench/run.py --out bench/RESULTS.md

# PTQ on hard models vs ai-edge-quantizer, nncf, ORT calibrators, then drop vs calibration
# samples on the per-tensor hard case; the --precisions auto ladder on the cases no full int8
# keeps within 0.3 pp; per-layer int16 activations; depthwise channel spread (docs/ptq.md; over 2 h on 2 cores: the
# sections' own wall times are 117, 10 and 12 min plus the ladder's).
bench-ptq: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[ptq]"
	$(BIN)/python bench/ptq.py --results bench/RESULTS.md
	$(BIN)/python bench/ptq_auto.py --results bench/RESULTS.md
	$(BIN)/python bench/ptq_calib.py --models vww_transfer_full --results bench/RESULTS.md
	$(BIN)/python bench/ptq_int16.py --results bench/RESULTS.md
	$(BIN)/python bench/ptq_bc_samples.py --models vww_transfer_full --results bench/RESULTS.md
	$(BIN)/python bench/ptq_spread.py --results bench/RESULTS.md

# The issue-#16 MobileNetV2-1.0-224 export, timed and its peak RSS sampled (~8 min).
bench-scale: $(STAMP)
	$(BIN)/python bench/scale.py --results bench/RESULTS.md

# keras-edge serve under load: 32 clients x 60 s, with and without dynamic batching (~5 min).
bench-serve: $(STAMP)
	$(BIN)/python bench/serve_load.py --results bench/RESULTS.md

# Build the wheel, install it in a scratch venv, and use the installed CLI from elsewhere.
wheel-check: $(STAMP)
	bash bench/wheel_check.sh

clean:
	rm -rf build dist .pytest_cache $(RUNS)
