# The two commands of the README's quick start: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
# Versions come from requirements.lock. On a machine without a GPU, point TORCH_INDEX at PyTorch's
# CPU wheel index to avoid the multi-GB CUDA build: make run TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
TORCH := torch==$(shell sed -n 's/^torch==//p' requirements.lock)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install run test test-fast mutants lint harness gather bench clean-venv

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(TORCH)
	$(VENV)/bin/pip install --quiet --constraint requirements.lock -e '.[dev,harness,interop]'
	touch $@

install: $(VENV)/.installed
	@# dvc.lock merges stage by stage (.gitattributes names the driver): a plain `git merge` of workers' branches works
	@-git config merge.dvclock.name "dvc.lock, stage by stage"
	@-git config merge.dvclock.driver "$(CURDIR)/$(VENV)/bin/python -m pipeline.ops.gather %O %A %B"

gather: install  # merge workers' branches: make gather REFS="worker/a worker/b"
	pile-gpt gather $(REFS)

run: install
	dvc repro

test: install  # every test, on every core (pytest-xdist; tests/conftest.py keeps shared fixtures together)
	pytest -n auto --dist loadgroup --durations=10

test-fast: install  # everything but the slow tier (full dvc runs, trainings, fault injection)
	pytest -n auto --dist loadgroup -m "not slow"

mutants: install  # each deliberate break must fail the tests named for it (tests/mutants.py; not in CI)
	python tests/mutants.py

harness: install  # lm-evaluation-harness on data/model/hf (after make run): metrics/harness.json
	pile-gpt harness

lint: install  # what CI checks before the tests
	ruff check .
	ruff format --check .

clean-venv:
	rm -rf $(VENV)

bench: install  # benchmarks, not tests: ratios measured side by side, written to bench/results/
	pip install --quiet --constraint requirements.lock -e '.[bench]'
	dvc repro
	python bench/pretokenize.py
	python bench/corpus.py
	python bench/readers.py
	python bench/training.py
	python bench/model.py
	python bench/dvc_noop.py
	python bench/peers.py
	python bench/tokenizer.py
