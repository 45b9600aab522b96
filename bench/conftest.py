"""Benchmark session setup: every run states which hot path it measured, on which Python and CPU."""

import os
import platform

# the benches start processes while gRPC runs here: no gRPC fork handlers (see tests/conftest.py)
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

import pytest

import benchreport
from tianwang.gateway import framing
from tianwang.gateway.benchmarks.common import cpu_model

ENV_INFO = {
    "using_cext": framing.USING_CEXT,
    "python": platform.python_version(),
    "cpu": cpu_model(),
}


def pytest_report_header(config):
    return [
        f"tianwang bench: USING_CEXT={framing.USING_CEXT} ({framing.why_not_compiled() or 'compiled hot path'}), "
        f"Python {ENV_INFO['python']}, CPU {ENV_INFO['cpu']}"
    ]


@pytest.fixture(autouse=True)
def _record_environment(request):
    if "benchmark" in request.fixturenames:
        request.getfixturevalue("benchmark").extra_info.update(ENV_INFO)
    yield


@pytest.fixture(params=framing.implementations(), ids=lambda ns: ns.NAME)
def impl(request):
    """Each hot-path implementation, compiled first: benchmarks print them side by side."""
    return request.param


def pytest_terminal_summary(terminalreporter):
    if not benchreport.SECTIONS:
        return
    lines = [
        f"USING_CEXT={framing.USING_CEXT}, Python {ENV_INFO['python']}, CPU {ENV_INFO['cpu']}, {os.cpu_count()} cores"
    ]
    for section, body in benchreport.SECTIONS.items():
        lines += ["", section] + [f"  {line}" for line in body]
    terminalreporter.section("tianwang bench summary")
    for line in lines:
        terminalreporter.write_line(line)
    out = os.path.join(os.path.dirname(__file__), "out")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
