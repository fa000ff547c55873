# Developer entry points. `make demo` and `make test` work on a fresh machine with only Python 3.10+ and make.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned for the test setup: the CPU wheel of this version is what our machines and CI install.
TORCH_PIN ?= torch==2.13.0
DEMO_OUT ?= out/demo
DEMO_ARGS ?=

TRITON_VENV ?= .venv-triton

.PHONY: install dev demo test test-slow lint docs clean triton-venv

# Runtime install: the SDK with the torch runtime and the CLI (what the demo needs).
$(VENV)/.installed-run: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[torch,cli]"
	touch $@

# Development install: every extra plus the reference implementations used by the parity tests.
$(VENV)/.installed-dev: $(VENV)/.installed-run
	$(PY) -m pip install --quiet -e ".[dev]"
	# sam2 is a source package: build it without CUDA and without pulling another torch.
	SAM2_BUILD_CUDA=0 $(PY) -m pip install --quiet --no-deps --no-build-isolation "sam2==1.1.0"
	# SAM-HQ's reference package declares torchvision, which has no CPU build here: install it alone.
	$(PY) -m pip install --quiet --no-deps "segment-anything-hq==0.3"
	# SAM 3's reference package declares torchvision, timm and triton: install it alone (stand-ins in tests/).
	$(PY) -m pip install --quiet --no-deps "sam3==0.1.4"
	touch $@

install: $(VENV)/.installed-run

# The Triton server's own environment (segmentor-cli serve-triton): nvidia-pytriton 0.7.0 needs numpy<2, while the
# main environment (and the `triton` client extra) run numpy 2. The tests start the server from here.
$(TRITON_VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install --quiet --upgrade pip setuptools wheel
	$(TRITON_VENV)/bin/python -m pip install --quiet "$(TORCH_PIN)"
	$(TRITON_VENV)/bin/python -m pip install --quiet -e ".[triton-server]"
	touch $@

triton-venv: $(TRITON_VENV)/.installed

dev: $(VENV)/.installed-dev

# Main job, offline: the packaged demo model segments the packaged sample image (set SEGMENTOR_MODEL_CHECKPOINT_PATH and
# SEGMENTOR_MODEL_NAME/_VARIANT, or pass DEMO_ARGS="--model sam_v2 --variant hiera_tiny", for real SAM weights).
demo: install
	$(VENV)/bin/segmentor-cli demo --out $(DEMO_OUT) $(DEMO_ARGS)

test: dev triton-venv
	PERCEPTRA_TRITON_PYTHON="$(abspath $(TRITON_VENV))/bin/python" $(PY) -m pytest

# the full-size parity cases (1024-px video tracking, full-size automatic mask generators): minutes each on 2 cores
test-slow: dev triton-venv
	PERCEPTRA_TRITON_PYTHON="$(abspath $(TRITON_VENV))/bin/python" $(PY) -m pytest -m slow

lint: dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

docs: dev
	$(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) $(TRITON_VENV) .pytest_cache .mypy_cache .ruff_cache site out
