# Tianwang: `make demo` runs the gateway on its simulators, `make test` runs the whole suite.
# Each target creates .venv when it is missing and installs the project (with its compiled
# extension) into it. PYTHON picks the interpreter used to create the venv.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tianwang-installed
SOURCES := pyproject.toml setup.py $(wildcard cext/*.pyx cext/*.pxd cext/*.pxi proto/tianwang/v1/*.proto)
PYTEST_ARGS ?=

.PHONY: install tools demo test test-twins fuzz bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) $(SOURCES)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	@$(PY) -c "import tianwang.gateway.framing as f; print('tianwang installed; compiled hot path:', f.USING_CEXT)"
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/tianwang run --demo

# Peer tools the tests compare against: gpsd's gpsdecode (Debian package gpsd-clients).
tools:
	@command -v gpsdecode >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing gpsd-clients (gpsdecode) for the NMEA comparison tests"; \
	    (apt-get install -y -qq gpsd-clients >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq gpsd-clients >/dev/null)); \
	  else \
	    echo "gpsdecode is missing: install gpsd-clients (sudo apt-get install gpsd-clients)" >&2; exit 1; \
	  fi; }

test: install tools
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# the twin suites (and the end-to-end ones) again, on the pure-Python twins only
test-twins: install tools
	GATEWAY_NO_CEXT=1 $(PY) -m pytest -q -p no:cacheprovider -m twins $(PYTEST_ARGS)

fuzz: install
	TIANWANG_FUZZ_EXAMPLES=200000 $(PY) -m pytest -q -p no:cacheprovider tests -k fuzz

bench: install
	$(PY) -m pytest -q -p no:cacheprovider bench --benchmark-columns=min,median,mean,ops,rounds --benchmark-sort=name

clean:
	rm -rf build *.egg-info proto/*.egg-info cext/_speedups.c cext/*.so proto/tianwang/v1/*_pb2*.py* .pytest_cache
