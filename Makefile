# One-command set-up, tests and demo. Every target creates ./.venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.requirements-installed
EXPORT_INSTALLED := $(VENV)/.export-requirements-installed
NMS_BUILT := lib/nms/.cpu_nms-built

.PHONY: setup test test-quick lint demo clean-build

setup: $(INSTALLED) $(NMS_BUILT)

# Reinstalls only when requirements.txt changes; a second `make setup` does nothing.
$(INSTALLED): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# onnx / onnxruntime: optional for users, installed for the tests so the export check runs.
$(EXPORT_INSTALLED): requirements-export.txt $(INSTALLED)
	$(PY) -m pip install --quiet -r requirements-export.txt
	touch $@

# The Cython box NMS, compiled in place into lib/nms/.
$(NMS_BUILT): lib/nms/cpu_nms.pyx lib/setup_nms.py $(INSTALLED)
	$(MAKE) -C lib PYTHON=$(abspath $(PY))
	touch $@

lint: setup
	$(PY) -m ruff check .

# One test process per core (pytest-xdist), each on one OpenMP thread: most of the slow tests
# start tools in subprocesses, whose imports a second core halves (7 -> 3.6 min on 2 cores).
test: setup $(EXPORT_INSTALLED) lint
	OMP_NUM_THREADS=1 $(PY) -m pytest -n auto

# The fast subset to run while editing (under a minute): every test not marked slow.
test-quick: setup $(EXPORT_INSTALLED) lint
	$(PY) -m pytest -m "not slow"

# The main job: the spacecraft pipeline on the embedded synthetic data set (see README).
demo: setup
	$(PY) tools/speed_demo.py

clean-build:
	$(MAKE) -C lib clean
	rm -f $(NMS_BUILT)
