# Every target creates .venv and installs what it needs; nothing by hand.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
# An editable install compiles greenpool/_speedups*.c in place: a change to them reinstalls.
BUILD_INPUTS := pyproject.toml setup.py $(wildcard greenpool/_speedups*.c greenpool/_speedups*.h)

.PHONY: demo test stress bench loadtest lint docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BUILD_INPUTS) | $(PY)
	$(PIP) install -e .
	touch $@

# The suite builds the docs too (a broken link or reference must fail a test, not skip it).
# mysqlclient (the `mysql` extra) compiles against MariaDB's client headers: Debian's
# libmariadb-dev, installed here with apt-get when root; without them its tests skip
# (and fail under CI=true, where a skipped proof is no proof).
$(VENV)/.installed-test: $(BUILD_INPUTS) | $(PY)
	$(PIP) install -e '.[test,docs]'
	@pkg-config --exists mariadb 2>/dev/null || pkg-config --exists mysqlclient 2>/dev/null \
	  || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	         echo "installing libmariadb-dev (mysqlclient's build headers) with apt-get"; \
	         DEBIAN_FRONTEND=noninteractive apt-get install -y -q libmariadb-dev pkg-config \
	           >/dev/null || { apt-get update -q >/dev/null && \
	           DEBIAN_FRONTEND=noninteractive apt-get install -y -q libmariadb-dev pkg-config \
	           >/dev/null; }; \
	       else echo "mysqlclient needs libmariadb-dev and pkg-config (apt-get install" \
	         "libmariadb-dev pkg-config); its tests will skip"; fi; }
	$(PIP) install -e '.[mysql]' || echo "mysqlclient did not build: its tests will skip"
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
