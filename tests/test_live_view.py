"""`tianwang top` and the live view of `tianwang run --demo`: plain frames when stdout is not a
terminal, a view redrawn in place on one (a real pty), `q` and Ctrl-C leaving with exit 0 and the
terminal as it was, `run --demo --seconds N`, the demo's devices around Xiangtan, its deliberate
noise labelled, and each subscriber's lag in seq against a live gateway."""

import asyncio
import fcntl
import io
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import msgpack
import pytest

from gw import READ, ROOT, base_config, client, md, running, until
from tianwang.gateway.cli.top import NOISE_HEADING, LiveScreen, TopView, plain
from tianwang.v1 import gateway_pb2 as pb

pytestmark = pytest.mark.timeout(90)

SECTIONS = ("FAMILY", "busiest devices", "subscribers (", "drops by reason", "latest:")
XIANGTAN = (27.83, 112.94)
CURSOR_UP = "\x1b[1A"


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests" / "plugins"), TIANWANG_DRIVER_MODULES="tw_testgen")
    env.update(extra)
    return env


def _tianwang(*args):
    return [sys.executable, "-m", "tianwang", *args]


class Pty:
    """A command on a real pty (its controlling terminal, 120x50): what it writes, and keys sent."""

    def __init__(self, argv, env):
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
        self.cooked = termios.tcgetattr(self.master)

        def own_terminal():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        # preexec_fn with threads running: safe here, only two system calls run between fork and exec
        self.proc = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=ROOT,
            preexec_fn=own_terminal,  # noqa: PLW1509
        )
        os.close(slave)
        self.out = b""

    def read_until(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.out:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._read(remaining):
                return False
        return True

    def _read(self, timeout) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # the other side closed
            return False
        self.out += data
        return bool(data)

    def lflags(self) -> int:
        return termios.tcgetattr(self.master)[3]

    def press(self, key: bytes) -> float:
        os.write(self.master, key)
        return time.monotonic()

    def wait(self, timeout) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.05)
        return self.proc.wait(max(0.1, deadline - time.monotonic()))

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        os.close(self.master)

    def text(self) -> str:
        return self.out.decode("utf-8", "replace")


GEN = [{"id": "gen-1", "driver": "testgen", "rate_hz": 20, "channels": ["a", "b"]}]


async def test_top_writes_plain_frames_when_stdout_is_not_a_terminal():
    async with running(base_config(GEN)) as gw:
        p = subprocess.Popen(
            _tianwang("top", "--addr", f"127.0.0.1:{gw.port}", "--interval", "0.3"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(TIANWANG_TOKEN=READ),
            cwd=ROOT,
        )
        await until(lambda: any(s.principal.name == "reader" for s in gw.service.subscribers), 20, "top's stream")
        await asyncio.sleep(1.5)
        p.send_signal(signal.SIGTERM)  # leaves like `q`
        out, err = await asyncio.to_thread(p.communicate, timeout=20)
    assert p.returncode == 0, err
    text = out.decode()
    assert "\x1b" not in text  # no ANSI at all
    frames = text.split("tianwang test ")[1:]
    assert len(frames) >= 3  # one per interval
    for frame in frames[1:]:
        assert all(s in frame for s in SECTIONS), frame
        assert "gen-1" in frame.split("busiest devices", 1)[1] and "test/gen-1/a" in frame.split("latest:", 1)[1]
        # top's own stream is a subscriber; its lag is a number of seqs
        row = next(line.split() for line in frame.splitlines() if line.strip().startswith("ipv4:127.0.0.1"))
        assert row[1] == "reader" and int(row[2].replace(",", "")) >= 0


def _stats_and_devices():
    """A Stats and device list as the gateway gives them, with a noisy demo device among others."""
    stats = pb.Stats(
        gateway="demo",
        version="1",
        started_ns=time.time_ns(),
        last_seq=100,
        journal_max_bytes=1 << 20,
        subscribers=1,
        counters={"envelopes_delivered": 40, "frames_dropped": 9},
    )
    stats.families.add(family="gnss", envelopes=90, devices=2, states={"ONLINE": 1, "OFFLINE": 1})
    stats.subscriber_stats.add(
        peer="ipv4:127.0.0.1:5000",
        principal="demo-read",
        topics=["gnss/#"],
        cursor=61,
        delivered=40,
        lag=40,
        started_ns=1,
    )
    stats.drops.add(driver="beidou", reason="noise", frames=7)
    stats.drops.add(driver="beidou", reason="bad_checksum", frames=2)
    devices = [
        pb.Device(
            id="bd-car-01",
            family="gnss",
            driver="beidou",
            state="ONLINE",
            info={"demo_noise": "noise on purpose"},
            counters={"envelopes": 80, "dropped_noise": 5, "dropped_bytes": 300},
        ),
        pb.Device(
            id="bd-van-02",
            family="gnss",
            driver="beidou",
            state="OFFLINE",
            reason="no data for 5 s",
            counters={"envelopes": 10, "dropped_noise": 2, "dropped_bad_checksum": 2},
        ),
    ]
    return stats, devices


def test_drops_split_the_demo_noise_from_the_rest():
    stats, devices = _stats_and_devices()
    frame = TopView().frame(stats, devices, 0.0)
    # bd-car-01 carries the demo_noise label: its 5 noise drops are listed apart, the other 2 and the
    # bad checksums of bd-van-02 stay in "drops by reason"
    assert frame.drops == [("beidou/bad_checksum", 2), ("beidou/noise", 2)]
    assert frame.noise == [("beidou/noise", 5, "bd-car-01")]
    text = plain(frame)
    noise = text.split(NOISE_HEADING + ":", 1)[1]
    assert "beidou/noise" in noise and "from bd-car-01" in noise and "noise on purpose" in noise
    assert [
        line.split()[0] for line in text.split("drops by reason (frames):", 1)[1].split("\n\n")[0].split("\n")[1:]
    ] == ["beidou/bad_checksum", "beidou/noise"]
    assert "bd-van-02" in text.split("not online:", 1)[1]
    # rates come from the next sample: 80 -> 100 envelopes in 2 s is 10/s
    view = TopView()
    view.frame(stats, devices, 0.0)
    devices[0].counters["envelopes"] = 100
    assert view.frame(stats, devices, 2.0).busiest[0] == ("bd-car-01", "gnss", "ONLINE", 100, 10.0)


@pytest.mark.parametrize("width", [100, 170])  # one column of sections, and two side by side
def test_terminal_rendering_redraws_in_place(width):
    from rich.console import Console

    stats, devices = _stats_and_devices()
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=width, height=60, color_system="standard")
    view = TopView()
    latest = {"gnss/fix": pb.Envelope(seq=99, topic="gnss/bd-car-01/fix", payload=msgpack.packb({"lat": 27.83}))}
    with LiveScreen(console=console) as screen:
        assert screen.tty
        screen.show(view.frame(stats, devices, 0.0, latest=latest, hints=["in another terminal: try this"]))
        first = buf.getvalue()
        stats.counters["envelopes_delivered"] = 60
        screen.show(view.frame(stats, devices, 1.0, latest=latest, hints=["in another terminal: try this"]))
    out = buf.getvalue()
    second = out[len(first) :]
    # the second frame moves the cursor back up over the first and draws over it
    assert CURSOR_UP in second and second.count(CURSOR_UP) >= first.count("\n") - 1
    for title in ("families", "busiest devices", "not online (1)", "subscribers (1)", "drops by reason", NOISE_HEADING):
        assert title in first and title in second
    assert "(20/s)" in second and "in another terminal: try this" in second
    assert "gnss/bd-car-01/fix" in second and '{"lat": 27.83}' in second
    # the subscriber's row with its lag
    row = next(line for line in second.splitlines() if "ipv4:127.0.0.1:5000" in line)
    assert "demo-read" in row and " 40 " in row


async def test_top_on_a_terminal_redraws_and_q_leaves_with_the_terminal_restored():
    async with running(base_config(GEN)) as gw:
        term = Pty(_tianwang("top", "--addr", f"127.0.0.1:{gw.port}", "--interval", "0.3"), _env(TIANWANG_TOKEN=READ))
        try:
            assert await asyncio.to_thread(term.read_until, "test/gen-1/a", 20), term.text()
            assert await asyncio.to_thread(term.read_until, CURSOR_UP, 10), term.text()  # a redraw
            # while it runs the terminal is in cbreak mode: no line editing, no echo
            assert not term.lflags() & (termios.ICANON | termios.ECHO)
            pressed = term.press(b"q")
            rc = await asyncio.to_thread(term.wait, 10)
            left_after = time.monotonic() - pressed
            assert rc == 0, term.text()
            assert left_after < 5
            # put back as it was, the cursor shown again
            assert term.lflags() & (termios.ICANON | termios.ECHO) == term.cooked[3] & (termios.ICANON | termios.ECHO)
            assert term.text().rstrip().endswith("\x1b[?25h")
            assert "Traceback" not in term.text()
        finally:
            term.close()


def test_demo_seconds_stops_by_itself_and_is_validated():
    env = _env(TIANWANG_DEMO_READ_TOKEN="demo-read-0123456789", TIANWANG_DEMO_CONTROL_TOKEN="demo-ctl-0123456789")
    r = subprocess.run(
        _tianwang("run", "--demo", "--seconds", "2", "--listen", "127.0.0.1:0", "--metrics", "off"),
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    ready = json.loads(r.stdout.splitlines()[0])
    assert ready["event"] == "ready" and ready["read_token"] == "demo-read-0123456789"
    # the way in, with the exact tokens, and the way out
    assert f"export TIANWANG_ADDR={ready['listen']} TIANWANG_TOKEN=demo-read-0123456789" in r.stderr
    assert "subscribe --topic 'gnss/+/fix'" in r.stderr
    assert "TIANWANG_TOKEN=demo-ctl-0123456789 tianwang command tsc-2001 yellow_flash" in r.stderr
    assert "demo: stopped after 2 s" in r.stderr and "Traceback" not in r.stderr
    assert "\x1b" not in r.stdout
    for bad, why in (("0", "above 0"), ("-1", "out of range"), ("soon", "not a number of seconds")):
        r = subprocess.run(
            _tianwang("run", "--demo", "--seconds", bad), capture_output=True, text=True, env=env, cwd=ROOT, timeout=30
        )
        assert r.returncode == 2 and why in r.stderr and len(r.stderr.strip().splitlines()[-1]) < 200, r.stderr
        assert "Traceback" not in r.stderr
    r = subprocess.run(
        _tianwang("run", "-c", "nothing.yaml", "--seconds", "3"),
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=30,
    )
    assert r.returncode == 2 and "--seconds goes with --demo" in r.stderr


def test_demo_view_on_a_terminal_labels_its_noise_and_q_stops_it():
    env = _env(TIANWANG_DEMO_READ_TOKEN="demo-read-0123456789", TIANWANG_DEMO_CONTROL_TOKEN="demo-ctl-0123456789")
    term = Pty(_tianwang("run", "--demo", "--listen", "127.0.0.1:0", "--metrics", "off", "--seconds", "60"), env)
    try:
        assert term.read_until(NOISE_HEADING, 40), term.text()
        assert term.read_until("beidou/noise", 20), term.text()  # a row of it, from the labelled receiver
        # the noise can show in the first frame already: wait for a redraw rather than assume one
        assert term.read_until(CURSOR_UP, 20), term.text()
        view = term.text()
        assert "q or Ctrl-C stops it sooner" in view and "TIANWANG_TOKEN=demo-read-0123456789" in view
        pressed = term.press(b"q")
        assert term.wait(20) == 0, term.text()
        assert time.monotonic() - pressed < 15
        assert term.lflags() & termios.ICANON and "Traceback" not in term.text()
        assert "stopped after" not in term.text()  # q, not the 60 s
    finally:
        term.close()


def _near_xiangtan(lat, lon, within_deg):
    return abs(lat - XIANGTAN[0]) < within_deg and abs(lon - XIANGTAN[1]) < within_deg


def test_the_simulators_drive_around_xiangtan():
    from tianwang.drivers.beidou import simulator as beidou_sim
    from tianwang.drivers.jt808 import simulator as jt808_sim

    assert _near_xiangtan(*beidou_sim.DEFAULT_CENTRE, 0.01) and _near_xiangtan(*jt808_sim.DEFAULT_CENTRE, 0.01)
    route = beidou_sim.CityLoop()
    assert all(_near_xiangtan(*route.at(t)[:2], 0.05) for t in range(0, int(route.period_s), 7))
    fleet = jt808_sim.Fleet("127.0.0.1", 9, terminals=200)
    assert all(_near_xiangtan(*t.route.at(t0)[:2], 0.15) for t in fleet.terminals for t0 in (0, 600, 1234))


async def test_demo_devices_report_positions_around_xiangtan_and_its_drops_are_its_noise():
    """The demo in process: every fix it publishes (both receivers, the terminals) is near Xiangtan,
    and every drop the gateway counts is the labelled receiver's deliberate noise."""
    from gw import journal_envelopes
    from tianwang.gateway.cli.demo import run_demo
    from tianwang.gateway.datapath.fanout import device_message

    started = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(run_demo(listen="127.0.0.1:0", metrics="off", live=False, ready=started.set_result))
    gw = await asyncio.wait_for(started, 60)
    try:

        def fixes():
            return journal_envelopes(gw.journal, "gnss/+/fix")

        await until(
            lambda: (
                {"bd-car-01", "bd-van-02"} <= {f["device_id"] for f in fixes()}
                and len({f["device_id"] for f in fixes()}) > 50
                and gw.supervisor.drops
            ),
            30,
            "fixes from both receivers and the terminals, and noise",
        )
        for fix in fixes():
            assert _near_xiangtan(fix["payload"]["lat"], fix["payload"]["lon"], 0.15), fix
        devices = [device_message(e) for e in gw.supervisor.entries.values()]
        frame = TopView().frame(gw.stats(), devices, 0.0)
        assert frame.noise and all(who == "bd-car-01" for _, _, who in frame.noise)
        assert sum(n for _, n, _ in frame.noise) == sum(gw.supervisor.drops.values())
        assert frame.drops == []
    finally:
        gw.request_stop()
        assert await asyncio.wait_for(task, 30) == 0


async def test_subscriber_lag_against_a_live_gateway_with_a_slow_reader():
    """A reader that keeps up has lag 0; one that reads nothing falls behind by exactly the seqs the
    gateway has not sent it (all of them match its topics, so: routed since it came - delivered);
    once it reads everything its lag is 0 again."""
    config = base_config([], journal={"max_bytes": "256MiB"})
    async with running(config) as gw:
        options = {"grpc.http2.bdp_probe": 0, "grpc.max_receive_message_length": 64 << 20}
        async with client(gw, **options) as (fast_stub, _), client(gw, **options) as (slow_stub, _):
            start = gw.journal.next_seq
            fast = fast_stub.Subscribe(pb.SubscribeRequest(topics=["gnss/#"]), metadata=md(READ))
            slow = slow_stub.Subscribe(pb.SubscribeRequest(topics=["gnss/#"]), metadata=md(READ))
            await fast.initial_metadata()
            await slow.initial_metadata()
            await until(lambda: len(gw.service.subscribers) == 2, 10, "two streams")
            n, pad = 3000, "x" * 16384  # ~50 MB: more than the transport buffers between them
            for i in range(n):
                gw.router.publish(f"gnss/bd-{i % 4}/fix", f"bd-{i % 4}", {"i": i, "pad": pad})
                if i % 200 == 199:
                    await asyncio.sleep(0)
            got = 0
            async for batch in fast:
                got += len(batch.envelopes)
                if got == n:
                    break
            await asyncio.sleep(0.3)  # let the slow stream fill what it can
            stats = await fast_stub.GetStats(pb.GetStatsRequest(), metadata=md(READ))
            by_lag = sorted(stats.subscriber_stats, key=lambda s: s.lag)
            assert len(by_lag) == 2
            keeping_up, behind = by_lag
            assert keeping_up.lag == 0 and keeping_up.delivered == n
            assert 0 < behind.lag < n
            assert behind.lag == gw.journal.next_seq - behind.cursor == n - behind.delivered
            assert stats.last_seq + 1 - start == n
            # the view shows it
            frame = TopView().frame(stats, [], 0.0)
            assert sorted(row[3] for row in frame.subscribers) == [0, behind.lag]
            got = 0
            async for batch in slow:
                got += len(batch.envelopes)
                if got == n:
                    break
            stats = await fast_stub.GetStats(pb.GetStatsRequest(), metadata=md(READ))
            assert [s.lag for s in stats.subscriber_stats] == [0, 0]
            fast.cancel()
            slow.cancel()
