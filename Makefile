# Two entry points a newcomer needs: `make quickstart` and `make test`.
# Each creates .venv if it is missing and installs everything first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pix2seq-installed
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# The PyPI build of upstream detectron2 main (a59f056), installed as pure Python:
# see docs/install.md "Installing detectron2".
D2_PYPI_SPEC ?= sal-detectron2==0.7.2
PYTEST_ARGS ?=
# detectron2's tool scripts (analyze_model.py, benchmark.py, ...) from the PyPI build
D2_TOOLS ?= $(VENV)/share/detectron2/tools

.PHONY: install test quickstart lint clean-quickstart

install: $(STAMP)

$(STAMP): setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install $(TORCH_SPEC)
	$(PY) -c "import detectron2" 2>/dev/null || $(MAKE) --no-print-directory install-detectron2-pypi
	test -d $(D2_TOOLS) || ! $(PY) -m pip show -q sal-detectron2 2>/dev/null || $(MAKE) --no-print-directory install-detectron2-tools
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -c "import detectron2, pix2seq_d2; print('detectron2', detectron2.__version__, 'from', detectron2.__file__)"
	touch $@

# Installs the cp310 wheel's Python code into the venv, then removes its _C extension
# (built for Python 3.10 / torch 2.3; nothing here may use it) and moves the top-level
# `tools` package the wheel ships (detectron2's own tool scripts, which would shadow this
# repository's tools/ folder) to $(D2_TOOLS), where tools/d2_tool.py runs them.
# A venv made before the scripts were kept: fetch the same wheel again for its scripts only.
.PHONY: install-detectron2-tools
install-detectron2-tools:
	tmp=$$(mktemp -d) && \
	$(PY) -m pip install --quiet --no-deps --only-binary=:all: --python-version 3.10 \
		--implementation cp --target "$$tmp" $(D2_PYPI_SPEC) && \
	mkdir -p "$$(dirname $(D2_TOOLS))" && mv "$$tmp/tools" "$(D2_TOOLS)" && rm -rf "$$tmp"

.PHONY: install-detectron2-pypi
install-detectron2-pypi:
	purelib=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') && \
	$(PY) -m pip install --quiet --no-deps --only-binary=:all: --python-version 3.10 \
		--implementation cp --target "$$purelib" --upgrade $(D2_PYPI_SPEC) && \
	rm -rf "$$purelib"/detectron2/_C.*.so "$(D2_TOOLS)" && mkdir -p "$$(dirname $(D2_TOOLS))" && \
	mv "$$purelib/tools" "$(D2_TOOLS)"

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

quickstart: $(STAMP)
	$(PY) tools/quickstart.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
