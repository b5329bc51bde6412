# Every target creates .venv and installs what it needs; nothing by hand.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
# An editable install compiles greenpool/_speedups.c in place: a change to it reinstalls.
BUILD_INPUTS := pyproject.toml setup.py greenpool/_speedups.c

.PHONY: demo test stress bench loadtest lint docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BUILD_INPUTS) | $(PY)
	$(PIP) install -e .
	touch $@

# The suite builds the docs too (a broken link or reference must fail a test, not skip it).
$(VENV)/.installed-test: $(BUILD_INPUTS) | $(PY)
	$(PIP) install -e '.[test,docs]'
	touch $@ $(VENV)/.installed-docs

$(VENV)/.installed-docs: $(BUILD_INPUTS) | $(PY)
	$(PIP) install -e '.[docs]'
	touch $@

$(VENV)/.installed-bench: $(BUILD_INPUTS) | $(PY)
	$(PIP) install -e '.[test,bench]'
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/echo_server.py --demo

test: $(VENV)/.installed-test
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

stress: $(VENV)/.installed-test
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

# make loadtest [TARGET=wsgi|echo|mixed|legacy] [HUBS=N] [USERS=N] [WORKERS=N] [LOADTEST_TIME=10s] [LOADTEST_ARGS=--shape]
loadtest: $(VENV)/.installed-test
	$(PY) -m loadtests.run $(LOADTEST_ARGS)

# make bench [SERVER_BENCH_ARGS=--quick]: dispatch and server figures, then the plot
bench: $(VENV)/.installed-bench
	$(PY) benchmarks/dispatch.py
	$(PY) benchmarks/uneven.py
	$(PY) benchmarks/servers.py $(SERVER_BENCH_ARGS)
	$(PY) benchmarks/plot.py

lint: $(VENV)/.installed-test
	$(PY) -m ruff check greenpool tests benchmarks examples loadtests docs/hooks.py
	$(PY) -m mypy greenpool/

# The documentation site, built strictly into site/: a broken link, a missing reference
# or a docstring that does not render fails the build (mkdocs names the page).
docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) build dist site *.egg-info loadtests/reports
