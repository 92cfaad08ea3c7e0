# edgekit: `make demo` and `make test` do everything on a fresh machine.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.edgekit-installed
PYTEST_ARGS ?=

.PHONY: setup test test-slow test-heavy demo bench zoo bench-nncf bench-detection device-env arm-board arm-board-stop clean

setup: $(STAMP)

# Re-installs only when pyproject.toml changes, so a second `make setup` takes seconds.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,test]'
	@touch $(STAMP)

# every test but the end-to-end runs marked slow or heavy: under 20 minutes on 2 cores
test: setup device-env
	$(PY) -m pytest -m "not slow and not heavy" $(PYTEST_ARGS)

# the end-to-end runs (the demo pipeline, YOLO, the emulated ARM board, torchrun, ...): CI runs them after make test
test-slow: setup device-env
	$(PY) -m pytest -m "slow and not heavy" $(PYTEST_ARGS)

# the heavy tests: torchvision's ResNet-50 FPN detectors and segmenters through export and both quantizers
test-heavy: setup
	$(PY) -m pytest -m heavy $(PYTEST_ARGS)

# A board-like Python for the SSH tests: numpy, onnxruntime and tflite-runtime only (no edgekit).
device-env:
	@$(PY) tests/device_env.py > /dev/null

# An emulated aarch64 board (qemu-user, Debian arm64 python3.11, ARM wheels of numpy/onnxruntime/tflite-runtime)
# behind its own sshd on 127.0.0.1; built once into .arm-board/. Prints HOST PORT USER KNOWN_HOSTS IDENTITY REMOTE_PYTHON.
arm-board: setup
	@$(PY) tests/arm_board.py start

arm-board-stop:
	@$(PY) tests/arm_board.py stop


demo: setup
	$(VENV)/bin/edgekit demo --out-dir runs/demo

bench: setup device-env
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

# torchvision's classifiers through prune/export/ORT/TFLite with fidelity; resumes from the committed rows
# (benchmarks/results/zoo-128-digits.jsonl): each net trained on the digits at 128 px, what fits 2 cores;
# ZOO_ARGS='--size 128 --weights digits --only resnet18 --force' redoes one row, ZOO_ARGS='--size 128' runs random weights
ZOO_ARGS ?= --size 128 --weights digits
zoo: setup device-env
	PYTHONPATH=. $(PY) benchmarks/zoo.py $(ZOO_ARGS)

# edgekit's ORT INT8 beside NNCF's PTQ of the same ONNX (NNCF in .venv-nncf, made when missing); resumes (NNCF_ARGS='--only resnet18 --force')
bench-nncf: setup
	PYTHONPATH=. $(PY) benchmarks/bench_nncf.py $(NNCF_ARGS)

# one YOLOv8n (trained by Ultralytics on builtin:digits-detect) through edgekit's, ORT's, onnx2tf's and Ultralytics' own
# INT8 paths: mAP, p50, conversion time (Ultralytics in .venv-yolo, made when missing); reuses runs/bench-detection (DETECTION_ARGS='--force')
bench-detection: setup
	PYTHONPATH=. $(PY) benchmarks/bench_detection.py $(DETECTION_ARGS)

clean:
	rm -rf $(VENV) .venv-device .venv-device-bare .venv-nncf .venv-yolo .arm-board build dist *.egg-info .pytest_cache
