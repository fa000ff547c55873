# Developer entry points. `make test` and `make demo` work on a fresh machine with only Python 3.10+.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned for the test setup: the CPU wheel of this version is what our machines and CI install.
TORCH_PIN ?= torch==2.13.0

.PHONY: dev test lint demo clean

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[dev]"
	# sam2 (reference implementation for parity tests) is a source package: no CUDA build, no extra torch.
	SAM2_BUILD_CUDA=0 $(PY) -m pip install --quiet --no-deps --no-build-isolation "sam2==1.1.0"
	touch $@

dev: $(VENV)/.installed

test: dev
	$(PY) -m pytest

lint: dev
	$(VENV)/bin/ruff check perceptra_seg tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
