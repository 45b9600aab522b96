"""The guides under docs/ hold what they promise:

- docs/config-reference.md is what the generator makes from the config models today (a stale page
  fails), and every model field has a description;
- each example config under examples/configs/ passes `tianwang check`, and together they cover every
  device family (a beidou receiver on serial and on TCP, a jt808 listener, signal controllers, onvif
  cameras);
- the Python and Node.js subscribers of the subscriber guide, run against a live gateway fed by a
  simulated receiver, print the journal's envelopes in seq order, resume from a seq and journal id,
  and refuse a resume against another journal. Node is required: a machine without it fails here
  (`make tools` says how to get it);
- every metric the operator guide names exists.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from gw import READ, ROOT, base_config, journal_envelopes, running, until

pytestmark = pytest.mark.timeout(120)

REFERENCE = ROOT / "docs" / "config-reference.md"
EXAMPLES = ROOT / "examples"
NODE_DIR = EXAMPLES / "node"


# -- the config reference ------------------------------------------------------------------------
def test_config_reference_is_generated_from_the_models():
    from tianwang.gateway.lifecycle import configref

    assert REFERENCE.read_text(encoding="utf-8") == configref.render(), (
        "docs/config-reference.md is stale: run `python -m tianwang.gateway.lifecycle.configref --write "
        "docs/config-reference.md`"
    )


def test_config_reference_check_flags_a_stale_page(tmp_path):
    stale = tmp_path / "config-reference.md"
    stale.write_text(REFERENCE.read_text(encoding="utf-8").replace("retention on disk by bytes", "retention"))
    cmd = [sys.executable, "-m", "tianwang.gateway.lifecycle.configref", "--check"]
    r = subprocess.run([*cmd, str(stale)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "is stale" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    r = subprocess.run([*cmd, str(REFERENCE)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_config_reference_lists_every_key_with_type_default_and_description():
    from pydantic import Field

    from tianwang.gateway.lifecycle import config as c, configref

    text = REFERENCE.read_text(encoding="utf-8")
    for key, typ, default, constraints in (
        ("gateway.journal.max_bytes", "size", "`256MiB`", "-"),
        ("gateway.fanout.max_batch", "int", "`256`", ">= 1, <= 8192"),
        ("auth.tokens[].name", "str", "required", "matches `^[A-Za-z0-9_.@-]{1,64}$`"),
        ("bridges.nats.servers", "list of str", "required", "at least 1 item"),
        ("devices[].backoff.factor", "float", "`2`", ">= 1, <= 10"),
        ("versions", "list of `2013`, `2019`", "`[2013, 2019]`", "-"),
        ("poll_hz", "float", "`1`", "> 0, <= 10"),
    ):
        assert re.search(
            rf"^\| `{re.escape(key)}` \| {re.escape(typ)} \| {re.escape(default)} \| {re.escape(constraints)} \| \S",
            text,
            re.M,
        ), key
    for family in ("beidou", "gb28181", "jt808", "onvif", "signal"):
        assert f"## `driver: {family}`" in text

    class Undocumented(c.Model):
        fine: int = Field(default=1, description="has one")
        bare: int = 2

    with pytest.raises(configref.ReferenceError, match="Undocumented.bare: no Field"):
        configref.rows(Undocumented)


# -- example configs -----------------------------------------------------------------------------
EXAMPLE_ENV = {
    "TW_TOKEN_CC": "cc-" + "a" * 29,
    "TW_TOKEN_GIS": "gis-" + "b" * 28,
    "TW_TOKEN_DESK": "desk-" + "c" * 27,
    "TW_TOKEN_VIDEO": "video-" + "d" * 26,
    "TW_JT808_SECRET": "e" * 32,
    "TW_CAM1_PASS": "cam1-pass",
    "TW_CAM2_PASS": "cam2-pass",
    "TW_GB_PASSWORD": "gb-default-pass",
    "TW_GB_NVR_PASSWORD": "gb-nvr-pass",
}


def _examples():
    return sorted((EXAMPLES / "configs").glob("*.yaml"))


def test_example_configs_cover_every_family():
    import yaml

    seen = set()
    for path in _examples():
        data = yaml.safe_load(path.read_text())
        for entry in (data.get("devices") or []) + (data.get("listeners") or []):
            transport = entry.get("url", "").split(":", 1)[0] or ("tcp" if "listen" in entry else "http")
            seen.add((entry["driver"], transport))
    assert {
        ("beidou", "serial"),
        ("beidou", "tcp"),
        ("jt808", "tcp"),
        ("signal", "serial"),
        ("signal", "tcp"),
        ("onvif", "http"),
        ("gb28181", "tcp"),
    } <= seen, seen


@pytest.mark.parametrize("path", _examples(), ids=lambda p: p.name)
def test_example_config_passes_check(path, tmp_path):
    env = dict(os.environ, **EXAMPLE_ENV)
    # the examples keep state in /var/lib/tianwang, which the systemd unit creates (StateDirectory)
    # and `check` requires; here a temporary directory stands in for it
    (tmp_path / "state").mkdir()
    copy = tmp_path / path.name
    copy.write_text(path.read_text().replace("/var/lib/tianwang", str(tmp_path / "state")))
    r = subprocess.run(
        [sys.executable, "-m", "tianwang", "check", str(copy)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith(")") and ": ok (" in r.stdout, r.stdout
    # the file's own header says which variables `check` needs: those must be all it reads
    header = path.read_text().split("\ngateway:", 1)[0]
    needed = set(re.findall(r"\b(TW_[A-Z0-9_]+)=", header))
    assert needed == set(re.findall(r"_env: (TW_[A-Z0-9_]+)", path.read_text())), path.name


async def _simulated(name, config, stack):
    """Point the example `config` (a dict) at simulators started on `stack`; returns the topics that
    must be published once it runs, and a coroutine that starts what dials the gateway (if any)."""
    from tianwang.drivers.beidou.simulator import ReceiverSimulator
    from tianwang.drivers.jt808.simulator import Fleet
    from tianwang.drivers.onvif.simulator import CameraSim
    from tianwang.drivers.signal.simulator import SignalSimulator

    async def started(sim):
        await sim.start()
        stack.push_async_callback(sim.stop)
        return sim

    devices = config.get("devices") or []
    if name.startswith("beidou"):
        sim = await started(
            ReceiverSimulator("pty" if "serial" in name else "tcp", rate=5, rdss="bds3" if "serial" in name else None)
        )
        devices[0]["url"] = sim.url
        return {f"gnss/{devices[0]['id']}/fix"}, None
    if name.startswith("signal"):
        line = await started(SignalSimulator("pty", controllers=2, base_id=17, traffic_s=0.5))
        tcp = await started(SignalSimulator("tcp", controllers=1, base_id=31, traffic_s=0.5))
        for d in devices:
            d["url"] = tcp.url if d["id"] == "tsc-0031" else line.url
        return {f"signal/{d['id']}/lamps" for d in devices}, None
    if name.startswith("onvif"):
        wanted = set()
        for d in devices:
            cam = await started(CameraSim(rate=10, password=os.environ[d["password_env"]]))
            d.update(host=cam.host, port=cam.port, username=cam.username, pull_timeout_s=1)
            if "webhook" in d:
                d["webhook"] = {"listen": "127.0.0.1:0"}  # the camera reaches the gateway on loopback
            wanted.add(f"camera/{d['id']}/event/RuleEngine/CellMotionDetector/Motion")
        return wanted, None
    if name.startswith("jt808"):
        listener = config["listeners"][0]
        listener["listen"] = "127.0.0.1:0"

        async def fleet(gw):
            entry = gw.supervisor.lookup(listener["id"])
            await until(lambda: "listen" in entry.info, 10, "jt808 listener bound")
            port = int(entry.info["listen"].rsplit(":", 1)[1])
            terminals = await started(Fleet("127.0.0.1", port, terminals=2, rate=5.0))
            await terminals.wait_online()
            return {f"gnss/{t.phone}/fix" for t in terminals.terminals}

        return set(), fleet
    if name.startswith("gb28181"):
        from gb_helpers import GbDevice, channel_ids

        listener = config["listeners"][0]
        listener["listen"] = "127.0.0.1:0"

        async def devices(gw):
            entry = gw.supervisor.lookup(listener["id"])
            await until(lambda: "listen" in entry.info, 10, "gb28181 listener bound")
            port = int(entry.info["listen"].rsplit(":", 1)[1])
            nvr_id, cam_id = (d["id"] for d in listener["devices"])
            nvr = await started(
                GbDevice(
                    port, nvr_id, os.environ["TW_GB_NVR_PASSWORD"], channels=[(channel_ids(nvr_id, 1)[0], "雨湖路口")]
                )
            )
            cam = await started(GbDevice(port, cam_id, os.environ["TW_GB_PASSWORD"]))
            assert (await nvr.register()).status == 200 and (await cam.register()).status == 200
            await until(lambda: gw.supervisor.lookup(channel_ids(nvr_id, 1)[0]) is not None, 10, "gb28181 channel")
            assert (await cam.position(27.83, 112.94)).status == 200
            return {f"gnss/{cam_id}/fix", f"camera/{channel_ids(nvr_id, 1)[0]}/health"}

        return set(), devices
    raise AssertionError(f"no simulators for {name}")


@pytest.mark.parametrize("path", _examples(), ids=lambda p: p.name)
async def test_example_config_runs_on_simulators(path, tmp_path, monkeypatch):
    """Each example, its addresses pointed at simulators (and its state at tmp_path), runs: every
    device comes ONLINE and publishes."""
    import contextlib

    import yaml

    import tianwang.drivers.beidou as beidou
    import tianwang.drivers.gb28181 as gb28181
    import tianwang.drivers.jt808 as jt808
    import tianwang.drivers.onvif as onvif
    import tianwang.drivers.signal as signal

    for key, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(key, value)
    text = path.read_text().replace("/var/lib/tianwang", str(tmp_path))
    config = yaml.safe_load(text)
    config["gateway"].update(listen="127.0.0.1:0", metrics=None)
    async with contextlib.AsyncExitStack() as stack:
        wanted, dial = await _simulated(path.name, config, stack)
        async with running(config, beidou.SPEC, gb28181.SPEC, jt808.SPEC, onvif.SPEC, signal.SPEC) as gw:
            if dial is not None:
                wanted |= await dial(gw)
            entries = list(gw.supervisor.entries.values())
            await until(
                lambda: all(e.state.value == "ONLINE" for e in entries),
                15,
                f"every device ONLINE ({[(e.id, e.state.value) for e in entries]})",
            )

            def missing():
                return wanted - {e["topic"] for e in journal_envelopes(gw.journal)}

            await until(lambda: not missing(), 15, f"publications {sorted(missing())}")


def test_integrator_guide_shows_every_example_config_verbatim():
    guide = (ROOT / "docs" / "integrator.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```yaml\n(.*?)^```", guide, re.S | re.M)
    for path in _examples():
        assert path.read_text() in blocks, f"docs/integrator.md does not show {path.name} as it is"


# -- the subscribers -----------------------------------------------------------------------------
def _lock_digest():
    return hashlib.sha256((NODE_DIR / "package-lock.json").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def node():
    """`node`, with examples/node/node_modules installed from package-lock.json (once: a stamp with the
    lock's digest says the install is current; npm's own cache makes a fresh install quick)."""
    exe, npm = shutil.which("node"), shutil.which("npm")
    if exe is None or npm is None:
        pytest.fail("node and npm are needed for the Node.js subscriber (docs/subscriber.md); `make tools` says how")
    stamp = NODE_DIR / "node_modules" / ".tianwang-lock"
    if not stamp.exists() or stamp.read_text() != _lock_digest():
        r = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, f"npm ci failed in {NODE_DIR}:\n{r.stderr[-2000:]}"
        stamp.write_text(_lock_digest())
    return exe


async def _run(cmd, addr, *extra):
    env = dict(os.environ, TIANWANG_TOKEN=READ, TIANWANG_ADDR=addr)
    proc = await asyncio.create_subprocess_exec(
        *cmd, *extra, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode, [json.loads(line) for line in out.decode().splitlines()], err.decode()


def _comparable(env):
    # what the journal holds of an envelope, with payload bytes as the clients print them (hex)
    def fix(v):
        if isinstance(v, (bytes, bytearray)):
            return v.hex()
        if isinstance(v, dict):
            return {str(k): fix(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v

    return {k: fix(env[k]) for k in ("seq", "topic", "device_id", "device_time_ns", "payload")}


async def test_python_and_node_subscribers_print_resume_and_refuse_another_journal(node):
    import tianwang.drivers.beidou as beidou
    from tianwang.drivers.beidou.simulator import ReceiverSimulator

    python_client = [sys.executable, str(EXAMPLES / "subscriber.py")]
    node_client = [node, str(NODE_DIR / "subscriber.js")]
    patterns = ["gnss/+/fix", "gnss/+/sky"]
    sim = ReceiverSimulator("tcp", rate=10, talker="GN", rdss=None, seed=5)
    await sim.start()
    devices = [
        {
            "id": "bd-7",
            "driver": "beidou",
            "url": sim.url,
            "rdss": None,
            "receiver": {"epoch_period_s": 0.1, "sky_decimation": 1},
        }
    ]
    try:
        async with running(base_config(devices), beidou.SPEC) as gw:
            addr = f"127.0.0.1:{gw.port}"

            def held():
                return [e for e in journal_envelopes(gw.journal) if e["topic"] in ("gnss/bd-7/fix", "gnss/bd-7/sky")]

            await until(lambda: len(held()) >= 20, 15, "20 fixes and skies in the journal")
            expected = [_comparable(e) for e in held()]

            # replay from the first seq: both print the journal's first 8 matching envelopes
            (rc_py, out_py, err_py), (rc_js, out_js, err_js) = await asyncio.gather(
                _run(python_client, addr, *patterns, "--from-seq", "1", "--count", "8"),
                _run(node_client, addr, *patterns, "--from-seq", "1", "--count", "8"),
            )
            assert rc_py == 0 and rc_js == 0, err_py + err_js
            assert [_comparable(e) for e in out_py] == expected[:8]
            assert out_js == out_py  # every field, nanosecond times and floats included
            assert {e["topic"] for e in out_py} == {"gnss/bd-7/fix", "gnss/bd-7/sky"}
            fix = next(e["payload"] for e in out_py if e["topic"].endswith("/fix"))
            assert {"time_ns", "lat", "lon", "speed_mps", "sats_used", "source"} <= set(fix)
            sky = next(e["payload"] for e in out_py if e["topic"].endswith("/sky"))
            assert sky["satellites"] and {"system", "svid", "snr", "used"} <= set(sky["satellites"][0])
            position = json.loads(err_py.splitlines()[-1])
            assert json.loads(err_js.splitlines()[-1]) == position
            assert position == {"journal_id": gw.journal.id, "next_seq": out_py[-1]["seq"] + 1}

            # resume where they stopped: the next 6, nothing repeated, nothing skipped
            resume = ["--from-seq", str(position["next_seq"]), "--journal-id", position["journal_id"], "--count", "6"]
            (rc_py, out_py, err_py), (rc_js, out_js, err_js) = await asyncio.gather(
                _run(python_client, addr, *patterns, *resume), _run(node_client, addr, *patterns, *resume)
            )
            assert rc_py == 0 and rc_js == 0, err_py + err_js
            assert [_comparable(e) for e in out_py] == expected[8:14]
            assert out_js == out_py

            # live (no --from-seq): envelopes routed from now on, in seq order
            first_live = gw.journal.last_seq
            rc, live, err = await _run(node_client, addr, "gnss/+/fix", "--count", "3")
            assert rc == 0, err
            seqs = [e["seq"] for e in live]
            assert seqs == sorted(set(seqs)) and seqs[0] > first_live
            assert all(e["topic"] == "gnss/bd-7/fix" for e in live)
            by_seq = {e["seq"]: _comparable(e) for e in journal_envelopes(gw.journal, "gnss/+/fix")}
            assert [_comparable(e) for e in live] == [by_seq[s] for s in seqs]

            # a resume naming another journal is refused, with the gRPC status on one line
            other = ["--from-seq", "1", "--journal-id", "0" * 32]
            for rc, out, err in await asyncio.gather(
                _run(python_client, addr, *patterns, *other), _run(node_client, addr, *patterns, *other)
            ):
                assert rc == 2 and out == [], err
                assert re.search(r"^subscriber: FAILED_PRECONDITION: .*journal", err, re.M), err
    finally:
        await sim.stop()


def test_node_subscriber_bad_flags_are_one_line_errors(node):
    for args, why in (
        (["--count=-1"], "--count must be a whole number"),
        (["--from-seq", "x"], "--from-seq must be"),
        (["--bogus"], "Unknown option"),
        (["--count"], "argument missing"),
    ):
        r = subprocess.run(
            [node, str(NODE_DIR / "subscriber.js"), *args],
            capture_output=True,
            text=True,
            env=dict(os.environ, TIANWANG_TOKEN=READ),
            timeout=30,
        )
        assert r.returncode == 2 and why in r.stderr and r.stderr.count("\n") == 1, r.stderr


# -- the operator guide --------------------------------------------------------------------------
def _metric_names(gw):
    from tianwang.gateway.datapath.metrics import GatewayCollector

    # the names Prometheus stores: a counter family `x` is sampled as `x_total`, an info family as `x_info`
    suffix = {"counter": "_total", "info": "_info"}
    return {f.name + suffix.get(f.type, "") for f in GatewayCollector(gw).collect()}


class _BridgeCounters:
    """Stands in for the NATS bridge's counters, so its metrics are listed without a NATS server:
    only the names are checked here (tests/test_bridge.py runs the real bridge)."""

    healthy = True

    def counters(self):
        return {
            k: 0
            for k in (
                "bridge_nats_lag",
                "bridge_nats_messages",
                "bridge_nats_envelopes",
                "bridge_nats_failures",
                "bridge_nats_gaps",
            )
        }


async def test_every_metric_the_operator_guide_names_exists(tmp_path):
    guide = (ROOT / "docs" / "operator.md").read_text(encoding="utf-8")
    named = set(re.findall(r"\btianwang_[a-z0-9_]+\b", guide))
    assert len(named) >= 10, named
    async with running(base_config(journal={"path": str(tmp_path / "journal")})) as gw:
        gw.bridge = _BridgeCounters()
        try:
            exposed = _metric_names(gw)
        finally:
            gw.bridge = None
    assert "tianwang_envelopes_total" in exposed and "tianwang_journal_disk_bytes" in exposed
    assert sorted(named - exposed) == [], (
        f"docs/operator.md names metrics the gateway does not expose: {sorted(named - exposed)}"
    )


# -- the subscriber guide's code -----------------------------------------------------------------
def _guide_functions():
    """The Python blocks of docs/subscriber.md that define functions, run into one namespace."""
    text = (ROOT / "docs" / "subscriber.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"^```python\n(.*?)^```", text, re.S | re.M) if "\ndef " in "\n" + b]
    assert len(blocks) >= 3, "docs/subscriber.md lost its resume, paging or command code"
    namespace = {}
    for block in blocks:
        exec(compile(block, "docs/subscriber.md", "exec"), namespace)
    return namespace


class _Enough(Exception):
    pass


async def test_subscriber_guide_code_pages_commands_and_resumes(tmp_path, monkeypatch):
    from gw import CONTROL
    from tianwang.v1 import client

    guide = _guide_functions()
    devices = [{"id": f"gen-{i}", "driver": "testgen", "rate_hz": 20} for i in range(7)]
    async with running(base_config(devices)) as gw:
        addr = f"127.0.0.1:{gw.port}"
        monkeypatch.setenv("TIANWANG_TOKEN", CONTROL)
        await until(
            lambda: all(e.state.value == "ONLINE" for e in gw.supervisor.entries.values()), 10, "devices online"
        )

        def work():
            channel = client.open_channel(addr)
            try:
                listed = [d.id for d in guide["all_devices"](channel, family="test", page_size=3)]
                only = [d.id for d in guide["all_devices"](channel, id_prefix="gen-6")]
                command = guide["send"](channel, "gen-2", "echo", {"x": 1}, reason="guide test", timeout_s=5)
                refused = guide["send"](channel, "gen-2", "refuse", reason="guide test", timeout_s=5)

                # follow: handle 30 envelopes, stop (as a crash would), come back from the saved position
                saved = tmp_path / "position.json"
                first, again = [], []

                def collect(into, n):
                    def handle(env):
                        into.append(env["seq"])
                        if len(into) == n:
                            raise _Enough

                    return handle

                def save(position):
                    guide["save_position"](saved, position)

                position = guide["load_position"](saved)
                with pytest.raises(_Enough):
                    guide["follow"](channel, ["test/+/reading"], position, collect(first, 30), print, save)
                position = guide["load_position"](saved)
                with pytest.raises(_Enough):
                    guide["follow"](channel, ["test/+/reading"], position, collect(again, 10), print, save)
                return listed, only, command, refused, first, again, position
            finally:
                channel.close()

        listed, only, command, refused, first, again, position = await asyncio.to_thread(work)
        held = [e["seq"] for e in journal_envelopes(gw.journal, "test/+/reading")]
    assert listed == [f"gen-{i}" for i in range(7)] and only == ["gen-6"]
    assert command[0] == "OK" and command[2] == {"echo": {"x": 1}}
    assert refused[0] == "REFUSED" and "says no" in refused[1]
    assert first == held[: len(first)]
    # saved once per batch: the second run starts at the batch after the last saved one, within the
    # first run's last batch at worst (an envelope handled twice), never after an unhandled one
    assert again[0] <= first[-1] + 1 and again[0] in held
    assert again == held[held.index(again[0]) : held.index(again[0]) + 10]
    assert position.journal_id and position.next_seq > again[0]


def test_every_command_the_guides_name_exists():
    """`tianwang VERB` and `--option`s in the guides are real (verbs the contract lists as not built yet
    are allowed: their guides describe them ahead of time)."""
    from tianwang.gateway.cli.main import build_parser

    parser = build_parser()
    verbs = next(a for a in parser._actions if a.dest == "verb").choices
    contract = (ROOT / "docs" / "contract.md").read_text(encoding="utf-8")
    import importlib

    from tianwang.gateway.lifecycle.registry import default_registry

    simulators = {
        s.name: importlib.import_module(s.simulator.split(":")[0]).build_parser()
        for s in default_registry().specs()
        if s.simulator
    }
    planned = set(re.findall(r"`tianwang ([a-z]+)`", contract.split("## Not built yet", 1)[1]))
    wrong = []
    for name in ("integrator.md", "subscriber.md", "operator.md"):
        text = (ROOT / "docs" / name).read_text(encoding="utf-8")
        for line in text.splitlines():
            for verb, rest in re.findall(r"(?:^|[`\s(])tianwang ([a-z][a-z-]*)((?:[^`|]*))", line):
                if verb in planned:
                    continue
                if verb not in verbs:
                    wrong.append(f"{name}: tianwang {verb}: no such verb")
                    continue
                sub = verbs[verb]
                if verb == "simulate":  # each kind's simulator has its own options
                    kind = (rest.split() or [""])[0]
                    if kind.isupper():  # `simulate KIND` in prose
                        continue
                    if kind not in simulators:
                        wrong.append(f"{name}: tianwang simulate {kind}: no such simulator")
                        continue
                    sub = simulators[kind]
                options = {o for a in sub._actions for o in a.option_strings}
                for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", rest):
                    if option not in options and option not in ("--log-level",):
                        wrong.append(f"{name}: tianwang {verb} {option}: no such option")
    assert not wrong, "\n".join(wrong)
