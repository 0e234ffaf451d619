# The two commands of the README's quick start: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
# torch 2.13.0; on a machine without a GPU, point TORCH_INDEX at PyTorch's CPU wheel index to avoid
# the multi-GB CUDA build, e.g. make run TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
TORCH := torch==2.13.0
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install run test clean-venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(TORCH)
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	dvc repro

test: install
	pytest

clean-venv:
	rm -rf $(VENV)
