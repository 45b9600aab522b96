# Tianwang: `make demo` runs the gateway on its simulators, `make test` runs the whole suite,
# `make lint` runs ruff and mypy (CONTRIBUTING.md).
# Each target creates .venv when it is missing and installs the project (with its compiled
# extension) into it. PYTHON picks the interpreter used to create the venv.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tianwang-installed
SOURCES := Makefile pyproject.toml setup.py proto/pyproject.toml proto/setup.py proto/build_protos.py \
	$(wildcard cext/*.pyx cext/*.pxd cext/*.pxi proto/tianwang/v1/*.proto)
# the [build-system] requires of both distributions (setuptools>=77, Cython, grpcio-tools...)
BUILD_REQUIRES = $$($(PY) -c 'import tomllib; print(" ".join(sorted({r for f in ("pyproject.toml", "proto/pyproject.toml") for r in tomllib.load(open(f, "rb"))["build-system"]["requires"]})))')
PYTEST_ARGS ?=

.PHONY: install tools demo test test-twins lint fuzz bench bench-pytest soak dist clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) $(SOURCES)
	@# the build requirements go into the venv too: tests/test_packaging.py builds both wheels with
	@# `pip wheel --no-build-isolation`, which a fresh venv's setuptools (65 on Python 3.11) cannot
	$(PY) -m pip install --quiet $(BUILD_REQUIRES)
	$(PY) -m pip install --quiet -e '.[test,bench,lint]'
	@$(PY) -c "import tianwang.gateway.framing as f; print('tianwang installed; compiled hot path:', f.USING_CEXT)"
	@# build/typing/: the folder mapping as links, for mypy and editors (tools/typecheck.py)
	@$(PY) tools/typecheck.py --tree
	@touch $(STAMP)

install: $(STAMP)

# DEMO_SECONDS=N: stop by itself after N seconds (exit 0); unset, run until q or Ctrl-C
DEMO_SECONDS ?=
demo: install
	$(VENV)/bin/tianwang run --demo$(if $(strip $(DEMO_SECONDS)), --seconds $(strip $(DEMO_SECONDS)))

# Tools the tests need beside Python: gpsd's gpsdecode (Debian package gpsd-clients), which the NMEA
# tests compare against, SIPp (Debian package sip-tester), the independent GB/T 28181 device of the
# peer tests, and Node.js 18+ with npm, which run the Node.js subscriber of
# docs/subscriber.md (tests/test_guides.py installs its packages into examples/node/node_modules).
tools:
	@command -v gpsdecode >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing gpsd-clients (gpsdecode) for the NMEA comparison tests"; \
	    (apt-get install -y -qq gpsd-clients >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq gpsd-clients >/dev/null)); \
	  else \
	    echo "gpsdecode is missing: install gpsd-clients (sudo apt-get install gpsd-clients)" >&2; exit 1; \
	  fi; }
	@{ command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing nodejs and npm for the Node.js subscriber test"; \
	    (apt-get install -y -qq nodejs npm >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null)); \
	  else \
	    echo "node and npm are missing: install Node.js 18 or newer with npm (https://nodejs.org, or" \
	      "sudo apt-get install nodejs npm); the Node.js subscriber test (tests/test_guides.py) needs them" >&2; exit 1; \
	  fi; }
	@node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' || { \
	  echo "node $$(node --version) is too old: the Node.js subscriber (examples/node) needs Node.js 18 or newer" >&2; exit 1; }
	@command -v sipp >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing sip-tester (sipp) for the GB/T 28181 peer tests"; \
	    (apt-get install -y -qq sip-tester >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq sip-tester >/dev/null)); \
	  else \
	    echo "sipp is missing: install sip-tester (sudo apt-get install sip-tester); the GB/T 28181" \
	      "peer tests (tests/test_gb28181_sipp.py) play a device with it" >&2; exit 1; \
	  fi; }

test: install tools
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# the twin suites (and the end-to-end ones) again, on the pure-Python twins only
test-twins: install tools
	GATEWAY_NO_CEXT=1 $(PY) -m pytest -q -p no:cacheprovider -m twins $(PYTEST_ARGS)

# ruff (lint, then the format check) and mypy over the typed core; pyproject.toml holds their settings.
# All three run, so one pass shows every problem; `ruff check --fix .` and `ruff format .` fix most.
lint: install
	@status=0; \
	echo "ruff check"; $(PY) -m ruff check . || status=1; \
	echo "ruff format --check"; $(PY) -m ruff format --check . || status=1; \
	echo "mypy"; $(PY) tools/typecheck.py || status=1; \
	exit $$status

fuzz: install
	TIANWANG_FUZZ_EXAMPLES=200000 $(PY) -m pytest -q -p no:cacheprovider tests -k fuzz

# `tianwang bench` on this machine: bench/out/results.json, report.md and the plots (docs/bench.md);
# BENCH_ARGS=--quick for the one-minute run, --baseline FILE to compare with an earlier results.json
BENCH_ARGS ?=
bench: install
	$(VENV)/bin/tianwang bench --out bench/out $(BENCH_ARGS)

# the pytest-benchmark suites in bench/ (their own sizes; they assert the targets of docs/architecture.md)
bench-pytest: install tools
	$(PY) -m pytest -q -p no:cacheprovider bench --benchmark-columns=min,median,mean,ops,rounds --benchmark-sort=name

# a bounded soak of the gateway on every demo simulator (SOAK_S seconds, default 600): fails on any
# lost or repeated seq, a Gap, or RSS growth; prints its figures
SOAK_S ?= 600
soak: install
	$(PY) bench/soak.py --duration $(SOAK_S)

# both wheels, `tianwang` (with the compiled extension) and the stubs-only `tianwang-proto`, into dist/
dist: $(PY)
	$(PY) -m pip wheel --quiet --no-deps --wheel-dir dist .
	$(PY) -m pip wheel --quiet --no-deps --wheel-dir dist ./proto
	@ls dist

clean:
	rm -rf build .mypy_cache .ruff_cache *.egg-info proto/build proto/*.egg-info cext/_speedups.c cext/*.so proto/tianwang/v1/*_pb2*.py* .pytest_cache
