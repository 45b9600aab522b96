"""The client verbs of `tianwang` against a gateway process: subscribe, devices, command, top, drivers."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from gw import CONTROL, READ, ROOT, GatewayProcess

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "gw.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "gateway": {"listen": "127.0.0.1:0", "metrics": None},
                "auth": {
                    "tokens": [
                        {"name": "reader", "token_env": "TW_T_READ", "read": ["#"]},
                        {"name": "operator", "token_env": "TW_T_CONTROL", "read": ["#"], "control": ["test/+"]},
                    ]
                },
                "devices": [
                    {"id": "gen-1", "driver": "testgen", "rate_hz": 20, "channels": ["a", "b"]},
                    {"id": "gen-2", "driver": "testgen", "rate_hz": 0},
                ],
            }
        )
    )
    proc = GatewayProcess(path, {"TW_T_READ": READ, "TW_T_CONTROL": CONTROL})
    yield proc
    proc.kill()


def tw(*args, token=READ, timeout=30):
    env = dict(os.environ)
    env["TIANWANG_TOKEN"] = token or ""
    env["PYTHONPATH"] = str(ROOT / "tests" / "plugins")
    env["TIANWANG_DRIVER_MODULES"] = "tw_testgen"
    return subprocess.run(
        [sys.executable, "-m", "tianwang", *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT
    )


def test_subscribe_json_lines(gateway):
    r = tw("subscribe", "--addr", gateway.addr, "--topic", "test/gen-1/a", "--from-seq", "1", "--count", "5", "--json")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) == 5
    assert all(line["topic"] == "test/gen-1/a" and line["device_id"] == "gen-1" for line in lines)
    assert [line["seq"] for line in lines] == sorted(line["seq"] for line in lines)
    assert all(isinstance(line["payload"]["n"], int) for line in lines)


async def test_subscribe_reports_gaps_in_text_and_json():
    """History the journal no longer holds comes first, as a GAP line (or a {"gap": ...} object)."""
    import asyncio

    from gw import base_config, running

    async with running(base_config([], journal={"max_bytes": "64KiB"})) as gw:
        for i in range(1500):  # more than the journal keeps
            gw.router.publish("gnss/bd-1/fix", "bd-1", {"lat": 31.0, "lon": 121.5, "i": i})
        first = gw.journal.first_seq
        assert first > 1
        base = ["subscribe", "--addr", f"127.0.0.1:{gw.port}", "--from-seq", "1", "--count", "2"]
        text = await asyncio.to_thread(tw, *base)
        assert text.returncode == 0, text.stderr
        lines = text.stdout.splitlines()
        assert lines[0] == f"GAP 1..{first - 1} (retention)"
        assert [int(line.split()[0]) for line in lines[1:]] == [first, first + 1]
        js = await asyncio.to_thread(tw, *base, "--json")
        assert js.returncode == 0, js.stderr
        objs = [json.loads(line) for line in js.stdout.splitlines()]
        assert objs[0] == {"gap": {"from_seq": 1, "to_seq": first - 1, "reason": "retention"}}
        assert [o["seq"] for o in objs[1:]] == [first, first + 1]


def test_subscribe_errors_are_clear(gateway):
    r = tw("subscribe", "--addr", gateway.addr, "--topic", "a//b", "--count", "1")
    assert r.returncode == 2 and "INVALID_ARGUMENT" in r.stderr and "empty level" in r.stderr
    r = tw("subscribe", "--addr", gateway.addr, "--count", "1", token="nope")
    assert (
        r.returncode == 2
        and "UNAUTHENTICATED: the gateway does not know this token (check TIANWANG_TOKEN or --token)" in r.stderr
    )


def test_devices_table_and_json(gateway):
    r = tw("devices", "--addr", gateway.addr)
    assert r.returncode == 0, r.stderr
    rows = r.stdout.splitlines()
    assert rows[0].split()[:4] == ["ID", "FAMILY", "DRIVER", "STATE"]
    assert any(row.split()[:4] == ["gen-1", "test", "testgen", "ONLINE"] for row in rows)
    r = tw("devices", "--addr", gateway.addr, "--json")
    devs = {d["id"]: d for d in map(json.loads, r.stdout.splitlines())}
    assert devs["gen-2"]["state"] == "ONLINE" and devs["gen-1"]["family"] == "test"


def test_command_ok_refused_and_denied(gateway):
    r = tw(
        "command",
        "gen-2",
        "echo",
        "n=3",
        "name=west",
        "flag=true",
        "--addr",
        gateway.addr,
        "--reason",
        "cli test",
        token=CONTROL,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] and out["result"] == {"echo": {"n": 3, "name": "west", "flag": True}} and out["audit_seq"] > 0
    r = tw("command", "gen-2", "refuse", "--addr", gateway.addr, token=CONTROL)
    assert r.returncode == 1 and json.loads(r.stdout)["code"] == "REFUSED"
    r = tw("command", "gen-2", "echo", "--addr", gateway.addr, token=READ)
    assert r.returncode == 2 and "PERMISSION_DENIED" in r.stderr
    r = tw("command", "gen-2", "echo", "oops", "--addr", gateway.addr, token=CONTROL)
    assert r.returncode == 2 and "not key=value" in r.stderr


def test_top_once(gateway):
    r = tw("top", "--once", "--interval", "0.5", "--addr", gateway.addr)
    assert r.returncode == 0, r.stderr
    assert "FAMILY" in r.stdout and "test" in r.stdout and "ONLINE=2" in r.stdout
    # the rate is measured over the interval (gen-1 publishes 2 channels at 20 Hz), not shown as 0
    row = next(line.split() for line in r.stdout.splitlines() if line.startswith("test "))
    assert float(row[3].replace(",", "")) > 10
    # and the newest envelope per channel, as the demo's view shows it
    latest = r.stdout.split("latest:", 1)[1]
    assert "test/gen-1/a" in latest and '"n":' in latest


def test_drivers_lists_installed_and_test_driver():
    r = tw("drivers")
    names = {line.split()[0] for line in r.stdout.splitlines()[1:]}
    assert "testgen" in names and "jt808" in names
    assert r.returncode == 0, r.stderr


def test_unreachable_gateway_is_a_clear_error():
    r = tw("devices", "--addr", "127.0.0.1:1", "--timeout", "2")
    assert r.returncode == 2 and "UNAVAILABLE" in r.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("subscribe", "--from-seq", "-1"),
        ("subscribe", "--max-batch", "-1"),
        ("subscribe", "--max-delay-ms", "4294967296"),
        ("subscribe", "--count", "x"),
        ("command", "dev", "act", "--command-timeout", "-5"),
        ("command", "dev", "act", "--command-timeout", "nan"),
        ("top", "--interval", "-1"),
        ("devices", "--timeout", "inf"),
    ],
)
def test_numbers_out_of_range_are_usage_errors(args):
    """Values the proto's unsigned fields (or a sleep) cannot take are refused by the parser: exit 2
    with the option named, never a traceback."""
    from tianwang.gateway.cli.main import build_parser

    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([*args, "--addr", "127.0.0.1:1"])
    assert info.value.code == 2


@pytest.mark.parametrize("driver", ["beidou", "jt808", "signal"])
def test_decode_starts_light(driver):
    """`tianwang decode` is quick to start: it loads neither grpc nor pydantic nor yaml."""
    probe = (
        "import sys, io; from tianwang.gateway.cli.main import main; sys.stdin = io.TextIOWrapper(io.BytesIO(b''));"
        f"rc = main(['decode', '--driver', '{driver}', '-']);"
        "heavy = sorted(m for m in ('grpc', 'pydantic', 'yaml', 'tianwang.gateway.lifecycle.supervisor') if m in sys.modules);"
        "print(rc, heavy)"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.stdout.strip() == "0 []", r.stdout + r.stderr
    assert "0 frames, 0 publications" in r.stderr


def test_subscribe_names_its_journal_and_refuses_a_resume_against_another(gateway):
    r = tw("subscribe", "--addr", gateway.addr, "--topic", "test/#", "--from-seq", "1", "--count", "2")
    assert r.returncode == 0, r.stderr
    journal = r.stderr.split("subscribe: journal ", 1)[1].split()[0]
    assert len(journal) == 32
    ok = tw(
        "subscribe",
        "--addr",
        gateway.addr,
        "--topic",
        "test/#",
        "--from-seq",
        "3",
        "--count",
        "1",
        "--journal",
        journal,
    )
    assert ok.returncode == 0 and ok.stdout.startswith("3 "), ok.stderr
    bad = tw("subscribe", "--addr", gateway.addr, "--from-seq", "3", "--count", "1", "--journal", "0" * 32)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert f"this gateway's journal is {journal}, not {'0' * 32}" in bad.stderr


def test_option_slips_are_one_line_usage_errors():
    for argv, text in [
        (("--log-level", "bogus", "drivers"), "'bogus' is not one of debug, info, warning, error, critical"),
        (("top", "--interval", "0", "--addr", "127.0.0.1:1"), "would poll the gateway too often"),
        (("top", "--interval", "-1", "--addr", "127.0.0.1:1"), "out of range"),
        (("drivers", "nosuch"), "no driver 'nosuch' (installed:"),
    ]:
        r = tw(*argv)
        assert r.returncode == 2 and text in r.stderr and "Traceback" not in r.stderr, (argv, r.stderr)


def test_a_missing_gateway_waits_for_timeout_then_says_where_it_looked():
    import socket
    import time

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    r = tw("devices", "--addr", f"127.0.0.1:{port}", "--timeout", "1.5")
    waited = time.monotonic() - t0
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"cannot reach the gateway at 127.0.0.1:{port} within 1.5 s; is it running?" in r.stderr
    assert waited >= 1.4  # it waited for the gateway, as --timeout says, instead of failing at once


def test_a_missing_token_says_how_to_give_one(gateway):
    r = tw("devices", "--addr", gateway.addr, token=None)
    assert r.returncode == 2 and "no token: set TIANWANG_TOKEN or pass --token" in r.stderr


def test_devices_json_is_typed_and_sorted(gateway):
    r = tw("devices", "--addr", gateway.addr, "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [d["id"] for d in rows] == sorted(d["id"] for d in rows)
    gen = next(d for d in rows if d["id"] == "gen-1")
    assert isinstance(gen["last_seen_ns"], int) and gen["last_seen_ns"] > 0
    assert isinstance(gen["counters"]["envelopes"], int) and gen["counters"]["envelopes"] > 0


def test_a_pattern_that_can_match_nothing_is_warned_about(gateway):
    r = tw("subscribe", "--addr", gateway.addr, "--topic", "test/+", "--topic", "test/gen-1/a", "--count", "1")
    assert r.returncode == 0
    assert "warning: 'test/+' has 2 levels" in r.stderr and "did you mean 'test/+/#'?" in r.stderr
    assert "test/gen-1/a" not in r.stderr  # a good pattern is not warned about


def test_drivers_actions_show_arguments_reason_and_grant():
    r = tw("drivers", "--actions", "beidou")
    assert r.returncode == 0, r.stderr
    assert "send_message  [control grant]" in r.stdout and "      dest: " in r.stdout
    r = tw("drivers", "--actions", "onvif")
    assert "snapshot  [read access]" in r.stdout


def test_decode_explains_what_it_dropped_and_suggests_the_driver():
    r = tw("decode", "--driver", "beidou", str(ROOT / "tests/captures/jt808/jt808_2013_session.bin"))
    assert r.returncode == 0
    assert "0 publications" in r.stderr and "bytes outside any frame" in r.stderr
    assert "the bytes look like jt808 data: try --driver jt808" in r.stderr
    r = tw("decode", "--driver", "jt808", str(ROOT / "tests/captures/signal/gbt20999_poll.bin"))
    assert "try --driver signal" in r.stderr
    r = tw("decode", "--driver", "beidou", "--id", "a/b", str(ROOT / "tests/captures/beidou/bd410004_bds_only.nmea"))
    assert r.returncode == 2 and "--id 'a/b' is not a device id" in r.stderr and r.stdout == ""


def test_demo_ready_line_carries_its_tokens():
    import subprocess

    env = dict(
        os.environ, TIANWANG_DEMO_READ_TOKEN="demo-read-0123456789", TIANWANG_DEMO_CONTROL_TOKEN="demo-ctl-0123456789"
    )
    p = subprocess.Popen(
        [sys.executable, "-m", "tianwang", "run", "--demo", "--quiet", "--listen", "127.0.0.1:0", "--metrics", "off"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=ROOT,
    )
    try:
        line = json.loads(p.stdout.readline())
        assert line["event"] == "ready"
        assert line["read_token"] == "demo-read-0123456789" and line["control_token"] == "demo-ctl-0123456789"
    finally:
        p.terminate()
        p.wait(15)


def test_command_help_actions_asks_the_gateway_what_the_device_is(gateway):
    r = tw("command", "--addr", gateway.addr, "gen-1", "--help-actions")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("gen-1: testgen device, ONLINE")
    assert "  echo  [control grant]" in r.stdout
    r = tw("command", "--addr", gateway.addr, "no-such", "--help-actions")
    assert r.returncode == 1 and "the gateway has no device 'no-such'" in r.stderr
    r = tw("command", "--addr", gateway.addr, "gen-1")
    assert r.returncode == 2 and "give an ACTION (or --help-actions" in r.stderr
