# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -c constraints.txt
STAMP_ALL := $(VENV)/.installed-all
STAMP_DEV := $(VENV)/.installed-dev
# One thread per process and an interpreted Triton keep the suite reproducible on 2-core CI.
TEST_ENV := TRITON_F32_DEFAULT=ieee MPLBACKEND=Agg

.PHONY: demo test lint bench clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check --upgrade pip setuptools wheel

$(STAMP_ALL): pyproject.toml constraints.txt | $(PY)
	$(PIP) -e ".[all]"
	touch $@

$(STAMP_DEV): pyproject.toml constraints.txt | $(PY)
	$(PIP) -e ".[all,dev]"
	touch $@ $(STAMP_ALL)

demo: $(STAMP_ALL)
	MPLBACKEND=Agg $(VENV)/bin/ssmkit demo

lint: $(STAMP_DEV)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test: lint
	$(TEST_ENV) $(PY) -m pytest -q

bench: $(STAMP_DEV)
	for b in $$($(PY) -c "from ssmkit.core.cli import available_benchmarks as a; print(' '.join(a()))"); do \
		$(VENV)/bin/ssmkit bench $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
