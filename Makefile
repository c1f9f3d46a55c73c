# astro-rmaat: the two commands are `make demo` and `make test`.
SHELL   := /bin/bash
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
OUT     ?= runs/demo
TEST_WORKERS ?= 2
# torch: the declared range admits the 2.13.0 CPU wheel that lies on this machine's disk;
# installing it first keeps pip from resolving a multi-GB CUDA build.
TORCH   ?= torch==2.13.0

.PHONY: demo test install install-dev bench clean-venv

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet "$(TORCH)" || $(PIP) install --quiet "torch>=2.4,<2.14"
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet "$(TORCH)" || $(PIP) install --quiet "torch>=2.4,<2.14"
	$(PIP) install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## make demo: simulate -> fit -> train on the built-in defaults; prints where the report is
demo: $(VENV)/.installed
	@if [ -f "$(OUT)/meta.json" ]; then \
	  echo "The demo already ran; its report is $(OUT)/report.md (make demo OUT=runs/demo2 runs it again)."; \
	else $(VENV)/bin/rmaat pipeline --out $(OUT); fi

## make test: the whole suite, notebooks included (quick mode), in TEST_WORKERS processes
## (pytest-xdist; --dist loadfile keeps each test file in one process, so its fixtures are built
## once -- test_readme_examples' blocks share one working directory and must stay together)
test: $(VENV)/.installed-dev
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

bench: $(VENV)/.installed-dev
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
