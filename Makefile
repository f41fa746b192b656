# Two entry points, both self-contained: each creates .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-test

.PHONY: demo test venv clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## make demo: run the main job on an embedded default model
# The demo model has a million parameters: it runs on the CPU (JAX_PLATFORMS=cpu unless you set it),
# so libtpu (installed by the test extra) does not probe for a TPU and print its warnings.
demo: $(STAMP)
	JAX_PLATFORMS=$${JAX_PLATFORMS:-cpu} $(PY) -m qwen3_jax.demo

## make test: install what the tests need and run the whole suite
test: $(STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) build *.egg-info
