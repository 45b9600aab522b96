"""The camera parts of the command line, as an operator runs them: `tianwang simulate onvif`,
`tianwang run --demo` with cameras (subscribe, snapshot, ptz_move through the CLI), `tianwang check`
of camera entries."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from gw import ROOT

pytestmark = pytest.mark.timeout(120)


def tianwang(*args, env=None, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "tianwang", *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT
    )


def test_simulate_onvif_announces_every_camera_and_stops_on_sigterm():
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tianwang",
            "simulate",
            "onvif",
            "--cameras",
            "3",
            "--stats-interval",
            "0",
            "--password",
            "pw-123",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        ready = json.loads(proc.stdout.readline())
        assert ready["kind"] == "onvif" and ready["username"] == "admin" and ready["password"] == "pw-123"
        assert ready["url"].startswith("http://127.0.0.1:") and len(set(ready["urls"])) == 3
        assert ready["url"] == ready["urls"][0]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["final"]["cameras"] == 3


@pytest.mark.parametrize(
    "args", [["--cameras", "-1"], ["--cameras", "0"], ["--rate", "x"], ["--port", "1", "--cameras", "2"]]
)
def test_simulate_onvif_bad_options_are_one_line(args):
    r = tianwang("simulate", "onvif", *args)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("tianwang simulate onvif: ")


def test_check_names_a_missing_password_variable(tmp_path):
    cfg = tmp_path / "site.yaml"
    cfg.write_text(
        "devices:\n  - {id: cam-1, driver: onvif, host: 10.1.2.3, username: admin, password_env: TW_NO_SUCH_VAR_1}\n"
        "  - {id: cam-2, driver: onvif, host: 'not a host', username: admin, password_file: /nonexistent/pass}\n"
        "  - {id: cam-3, driver: onvif, host: 10.1.2.4, username: admin}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TW_NO_SUCH_VAR_1"}
    r = tianwang("check", str(cfg), env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr + r.stdout
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert "devices[0] (cam-1).password_env: environment variable TW_NO_SUCH_VAR_1 is not set or empty" in lines
    assert any(line.startswith("devices[1] (cam-2).host: ") for line in lines)
    assert any(line.startswith("devices[1] (cam-2).password_file: ") for line in lines)
    assert any(line.startswith("devices[2]") and "password" in line for line in lines)


def test_demo_has_cameras_to_subscribe_snapshot_and_move():
    env = dict(
        os.environ, TIANWANG_DEMO_READ_TOKEN="demo-read-0123456789", TIANWANG_DEMO_CONTROL_TOKEN="demo-ctl-0123456789"
    )
    demo = subprocess.Popen(
        [sys.executable, "-m", "tianwang", "run", "--demo", "--listen", "127.0.0.1:0", "--metrics", "off", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        ready = json.loads(demo.stdout.readline())
        addr = ready["listen"]
        read = dict(env, TIANWANG_TOKEN=env["TIANWANG_DEMO_READ_TOKEN"])
        control = dict(env, TIANWANG_TOKEN=env["TIANWANG_DEMO_CONTROL_TOKEN"])
        r = tianwang(
            "subscribe",
            "--addr",
            addr,
            "--topic",
            "camera/+/event/#",
            "--count",
            "4",
            "--json",
            "--timeout",
            "30",
            env=read,
        )
        assert r.returncode == 0, r.stderr
        events = [json.loads(line) for line in r.stdout.splitlines()]
        assert len(events) == 4 and all(e["topic"].startswith("camera/cam-0") for e in events)
        assert all({"topic", "source", "data", "utc_ns"} <= set(e["payload"]) for e in events)
        deadline = time.monotonic() + 30
        while True:  # the cameras are up when their events are; a command may still race the first connect
            r = tianwang("command", "--addr", addr, "cam-01", "snapshot", env=read)
            if r.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert r.returncode == 0, r.stdout + r.stderr
        reply = json.loads(r.stdout)
        assert reply["ok"] and reply["result"]["size"] > 100
        r = tianwang("command", "--addr", addr, "cam-01", "ptz_move", "pan=0.5", "duration_s=0.3", env=control)
        assert r.returncode == 0, r.stdout + r.stderr
        assert json.loads(r.stdout)["result"]["pan"] > 0.1
        r = tianwang("command", "--addr", addr, "cam-01", "ptz_move", "pan=0.5", env=read)
        assert r.returncode == 2 and "PERMISSION_DENIED" in r.stderr
    finally:
        demo.send_signal(signal.SIGTERM)
        try:
            demo.wait(20)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait(5)


def test_listing_drivers_does_not_load_the_soap_stack():
    """`tianwang drivers` builds the onvif SPEC without importing zeep, lxml, aiohttp or onvif."""
    probe = (
        "import sys, tianwang.drivers.onvif as o; spec = o.SPEC; "
        "assert spec.name == 'onvif' and spec.family == 'camera'; "
        "print(sorted(m for m in ('zeep', 'lxml', 'aiohttp', 'onvif', 'onvif_parsers') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    r = tianwang("drivers")
    assert r.returncode == 0
    row = next(line for line in r.stdout.splitlines() if line.startswith("onvif"))
    assert "camera" in row and "snapshot" in row and "ptz_move" in row
