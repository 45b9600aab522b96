"""Nothing lost across restarts: a gateway process with journal.path, killed with SIGKILL or
stopped with SIGTERM while a device publishes, and started again on the same directory. Subscribers
resume with a Position (journal id + next seq) and receive exactly the rest; seq never repeats.
A memory-only gateway that restarted refuses such a resume instead of serving other envelopes."""

import signal
import time

import grpc
import pytest
import yaml

from gw import READ, GatewayProcess
from tianwang.v1 import client

pytestmark = pytest.mark.timeout(120)

ENV = {"TW_T_READ": READ}


def write_config(path, journal):
    cfg = {
        "gateway": {"name": "durable", "listen": "127.0.0.1:0", "metrics": None, "journal": journal},
        "auth": {"tokens": [{"name": "reader", "token_env": "TW_T_READ", "read": ["#"]}]},
        "devices": [{"id": "gen", "driver": "testgen", "rate_hz": 200, "burst": 5}],
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def take(addr, n, position=None, from_seq=0, topics=("test/#",)):
    """The first `n` envelopes of a subscription (seq, payload), advancing `position`."""
    out = []
    with grpc.insecure_channel(addr) as ch:
        it = client.subscribe(ch, list(topics), token=READ, from_seq=from_seq, position=position, max_delay_ms=5)
        try:
            for item in it:
                assert not isinstance(item, client.Gap), item
                out.append((item["seq"], item["payload"]))
                if len(out) >= n:
                    break
        finally:
            it.close()
    return out


def contiguous(seqs):
    return all(b == a + 1 for a, b in zip(seqs, seqs[1:], strict=False))


@pytest.fixture
def procs():
    started = []

    def start(path):
        p = GatewayProcess(path, ENV)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()


@pytest.mark.parametrize("fsync", ["always", "batch"])
def test_kill_9_then_restart_loses_nothing_and_never_reuses_a_seq(tmp_path, procs, fsync):
    cfg = write_config(tmp_path / "gw.yaml", {"path": str(tmp_path / "journal"), "fsync": fsync})
    gw = procs(cfg)
    pos = client.Position()
    first = take(gw.addr, 1500, pos, from_seq=1)
    journal_id = pos.journal_id
    assert len(journal_id) == 32
    assert [s for s, _ in first] == list(range(1, 1501))
    time.sleep(0.3)  # the device keeps publishing
    gw.signal(signal.SIGKILL)
    gw.wait(10)

    gw = procs(cfg)
    # resume exactly where the subscriber stopped: no gap, no duplicate, same journal
    rest = take(gw.addr, 3000, pos)
    assert pos.journal_id == journal_id
    seqs = [s for s, _ in rest]
    assert seqs[0] == 1501 and contiguous(seqs)
    # the envelopes delivered before the kill are on disk, byte for byte the same payloads
    again = take(gw.addr, 1500, from_seq=1)
    assert again == first
    # the second process's readings (its driver counts from n=1 again) follow the first's under
    # new seqs: one seq, one envelope, across the kill
    restart = [i for i, (_, p) in enumerate(rest) if p.get("n") == 1]
    assert len(restart) == 1
    before = [p["n"] for _, p in rest[: restart[0]] if "n" in p]
    assert before == sorted(before) and before[0] > 1000


def simulate_power_cut(journal, cut):
    """What a power cut leaves: the last `cut` bytes of the newest segment never reached the disk,
    and journal.seq's live record is from a boot that is over."""
    seg = sorted(journal.glob("*.seg"))[-1]
    raw = seg.read_bytes()
    seg.write_bytes(raw[: max(0, len(raw) - cut)])
    seq_file = journal / "journal.seq"
    if not seq_file.exists():
        return
    raw = bytearray(seq_file.read_bytes())
    raw[4096 + 4 : 4096 + 20] = b"\xee" * 16  # another boot id (its CRC fails too: unknown either way)
    seq_file.write_bytes(bytes(raw))


@pytest.mark.parametrize("fsync", ["batch", "never"])
def test_after_a_power_cut_a_resume_gets_a_gap_and_seq_never_repeats(tmp_path, procs, fsync):
    journal = tmp_path / "journal"
    cfg = write_config(tmp_path / "gw.yaml", {"path": str(journal), "fsync": fsync})
    gw = procs(cfg)
    pos = client.Position()
    first = take(gw.addr, 1500, pos, from_seq=1)
    gw.signal(signal.SIGKILL)
    gw.wait(10)
    simulate_power_cut(journal, 20_000)
    gw = procs(cfg)
    # the subscriber resumes at its last seq + 1: a Gap for what the power cut took, never
    # "ahead of the journal", then envelopes under seqs nobody saw before
    items = []
    with grpc.insecure_channel(gw.addr) as ch:
        it = client.subscribe(ch, ["test/#"], token=READ, position=pos, max_delay_ms=5)
        try:
            for item in it:
                items.append(item)
                if len(items) >= 50:
                    break
        finally:
            it.close()
    gaps = [i for i in items if isinstance(i, client.Gap)]
    assert gaps and gaps[0].from_seq == first[-1][0] + 1 and gaps[0].reason == "lost"
    after = [i["seq"] for i in items if not isinstance(i, client.Gap)]
    assert after and after[0] > gaps[0].to_seq and after[0] > first[-1][0]
    # what survived on disk is still there, byte for byte
    again = take(gw.addr, 100, from_seq=1)
    assert again == first[:100]


def test_sigterm_then_restart_resumes_exactly(tmp_path, procs):
    cfg = write_config(tmp_path / "gw.yaml", {"path": str(tmp_path / "journal"), "fsync": "batch"})
    gw = procs(cfg)
    pos = client.Position()
    got = take(gw.addr, 800, pos, from_seq=1)
    gw.signal(signal.SIGTERM)
    assert gw.wait(10) == 0
    gw = procs(cfg)
    got += take(gw.addr, 800, pos)
    seqs = [s for s, _ in got]
    assert seqs == list(range(1, 1601))


def test_memory_journal_restart_refuses_a_resume(tmp_path, procs):
    cfg = write_config(tmp_path / "gw.yaml", {"path": None})
    gw = procs(cfg)
    pos = client.Position()
    take(gw.addr, 100, pos, from_seq=1)
    old = pos.journal_id
    gw.signal(signal.SIGTERM)
    gw.wait(10)
    gw = procs(cfg)
    with pytest.raises(grpc.RpcError) as err:
        take(gw.addr, 10, pos)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"not {old}" in err.value.details() and "restarted without journal.path" in err.value.details()
    # starting over (no position) works, under the new journal's id
    fresh = client.Position()
    take(gw.addr, 10, fresh)
    assert fresh.journal_id and fresh.journal_id != old


def _cli(*args, **kw):
    import os
    import subprocess
    import sys

    from gw import ROOT

    env = dict(os.environ, TIANWANG_TOKEN=READ)
    return subprocess.Popen(
        [sys.executable, "-m", "tianwang", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
        **kw,
    )


def test_subscribe_says_when_the_gateway_goes_away_and_follow_resumes(tmp_path, procs):
    import json

    cfg = write_config(tmp_path / "gw.yaml", {"path": str(tmp_path / "journal"), "fsync": "batch"})
    gw = procs(cfg)
    plain = _cli("subscribe", "--addr", gw.addr, "--topic", "test/#")
    time.sleep(1.5)
    gw.signal(signal.SIGTERM)
    assert gw.wait(10) == 0
    out, err = plain.communicate(timeout=20)
    assert plain.returncode == 1 and "Traceback" not in err
    assert "the gateway ended the stream (it is stopping or restarting) after" in err
    assert "resume with --from-seq" in err and "--journal" in err
    # --follow keeps to its --addr: the gateway comes back on the same port
    from nats_helpers import free_port

    cfg_text = cfg.read_text().replace("127.0.0.1:0", f"127.0.0.1:{free_port()}")
    cfg.write_text(cfg_text)
    gw = procs(cfg)
    follow = _cli(
        "subscribe", "--addr", gw.addr, "--topic", "test/#", "--json", "--from-seq", "1", "--follow", "--count", "2500"
    )
    time.sleep(1.0)
    gw.signal(signal.SIGTERM)
    gw.wait(10)
    time.sleep(1.0)
    gw = procs(cfg)  # back on the same port, the same journal on disk
    out, err = follow.communicate(timeout=60)
    assert follow.returncode == 0, err
    seqs = [json.loads(line)["seq"] for line in out.splitlines()]
    assert len(seqs) == 2500 and seqs == list(range(1, 2501))  # across the restart: none lost, none twice
    assert "reconnecting in" in err
