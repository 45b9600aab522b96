"""`make soak` itself, run short: the gateway process on every demo simulator with a durable
journal, a subscriber resuming at random moments and reloads every few seconds; it must pass and
report its figures. (The real soak is `make soak`, 10 minutes.)"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent


def test_short_soak_passes_and_reports(tmp_path):
    out = tmp_path / "soak.json"
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "soak.py"),
            "--duration",
            "20",
            "--reload-s",
            "4",
            "--seed",
            "7",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["problem_count"] == 0 and figures["gaps"] == 0
    assert figures["reloads"] >= 4 and figures["reconnects"] >= 1
    assert figures["envelopes_received"] > 1000
    assert {"beidou", "jt808"} <= set(figures["families"])
    assert "none lost or repeated" in res.stderr


def test_soak_refuses_nonsense_options():
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--duration", "-5"], capture_output=True, text=True, cwd=ROOT
    )
    assert res.returncode == 2 and "must be positive" in res.stderr and "Traceback" not in res.stderr
