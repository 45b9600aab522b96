"""Shared fixtures.

- `impl`: every hot-path implementation available here (compiled, then the pure-Python twin); a test
  taking it runs once per implementation and is marked `twins`.
- Async tests run on uvloop, as the gateway does; an exception that reaches the loop's handler fails
  the test that caused it.
- Hypothesis: `TIANWANG_FUZZ_EXAMPLES` raises the example count for the fuzz tests (`make fuzz`).
"""

import asyncio
import gc
import os
import sys as _sys
from pathlib import Path as _Path

# The tests start processes (the CLI, simulators) while gRPC servers and channels run in this one.
# gRPC's fork handlers are for children that go on using gRPC; ours exec at once, and the handlers
# can crash such a child before its exec (grpc/grpc#13998, #29044). Read once, when grpc starts.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

import pytest
import uvloop
from hypothesis import HealthCheck, settings

from tianwang.gateway import framing

settings.register_profile(
    "tianwang",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    max_examples=int(os.environ.get("TIANWANG_HYPOTHESIS_EXAMPLES", "200")),
)
settings.load_profile("tianwang")

FUZZ_EXAMPLES = int(os.environ.get("TIANWANG_FUZZ_EXAMPLES", "2000"))


@pytest.fixture(params=framing.implementations(), ids=lambda ns: ns.NAME)
def impl(request):
    """A hot-path implementation namespace (`tianwang.gateway.framing.compiled()` or `.twins()`)."""
    return request.param


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "impl" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.twins)


_LOOP_ERRORS = []


def _new_checked_loop():
    """A uvloop loop whose exception handler records what reaches it."""
    loop = uvloop.new_event_loop()
    loop.set_exception_handler(lambda _loop, context: _LOOP_ERRORS.append(context))
    return loop


def pytest_asyncio_loop_factories(config, item):
    return {"uvloop": _new_checked_loop}


@pytest.fixture(autouse=True)
def _fail_on_loop_errors(request):
    """An exception that reached the loop's handler during a test fails that test."""
    _LOOP_ERRORS.clear()
    yield
    if asyncio.iscoroutinefunction(getattr(request.node, "function", None)):
        # finalize what this test left behind now, so that a transport closed after its loop is
        # blamed on the test that leaked it and not on whichever test runs when the GC gets to it
        gc.collect()
    if _LOOP_ERRORS:
        msgs = "; ".join(repr(c.get("exception") or c.get("message")) for c in _LOOP_ERRORS)
        _LOOP_ERRORS.clear()
        pytest.fail(f"exception reached the event loop's handler: {msgs}")


# The test-only driver (tests/plugins/tw_testgen.py) is importable in-process and, through
# PYTHONPATH and TIANWANG_DRIVER_MODULES, in gateway subprocesses.
PLUGINS = str(_Path(__file__).parent / "plugins")
if PLUGINS not in _sys.path:
    _sys.path.insert(0, PLUGINS)
