"""tianwang.gateway.framing: the one switch between the compiled hot path and the twins."""

import os
import subprocess
import sys

from gw import ROOT

PROBE = """
import sys
if {hide}:
    sys.modules["tianwang.cext._speedups"] = None  # as if the extension had not been built
import tianwang.gateway.framing as f
print(f.USING_CEXT, f.IMPLEMENTATION, f.TopicFilter.__module__)
"""


def run(env_extra, hide=False):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-c", PROBE.format(hide=hide)], capture_output=True, text=True, env=env, cwd=ROOT
    )


def test_no_cext_forces_the_twins():
    r = run({"GATEWAY_NO_CEXT": "1", "GATEWAY_REQUIRE_CEXT": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "python", "tianwang.cext.topics_py"]


def test_require_cext_makes_a_missing_extension_an_error():
    r = run({"GATEWAY_REQUIRE_CEXT": "1"}, hide=True)
    assert r.returncode != 0
    assert "GATEWAY_REQUIRE_CEXT is set but tianwang.cext._speedups cannot be imported" in r.stderr


def test_missing_extension_without_require_runs_the_twins_and_says_why():
    r = run({}, hide=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[:2] == ["False", "python"]


def test_built_extension_is_used_by_default():
    r = run({})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "cext", "tianwang.cext._speedups"]
