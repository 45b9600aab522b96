"""No credentials in URLs: the config refuses them (secrets come from *_env / *_file), and whatever
URL reaches a log line, a health reason, ListDevices or GetStats has its user information redacted
(issue 20, item 15)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gw import READ, ROOT, base_config, client, md, running, until
from tianwang.gateway.errors import ConfigError
from tianwang.gateway.lifecycle.config import load_config
from tianwang.v1 import gateway_pb2 as pb

pytestmark = pytest.mark.timeout(60)

SECRET = "s3cret-pw"


def test_nats_urls_with_credentials_are_refused_without_echoing_them(monkeypatch):
    monkeypatch.setenv("TW_NATS_PW", "pw")
    for url in (f"nats://bridge:{SECRET}@127.0.0.1:4222", f"tls://{SECRET}@nats.example:4222"):
        cfg = base_config()
        cfg["bridges"] = {"nats": {"servers": ["nats://127.0.0.1:4222", url]}}
        with pytest.raises(ConfigError) as err:
            load_config(cfg)
        ((path, reason),) = err.value.problems
        assert path == "bridges.nats.servers" and "no credentials in the URL" in reason and "password_env" in reason
        assert SECRET not in str(err.value)
    cfg = base_config()
    cfg["bridges"] = {"nats": {"servers": ["nats://127.0.0.1:4222"], "user": "bridge", "password_env": "TW_NATS_PW"}}
    assert load_config(cfg).bridges.nats.password.get_secret_value() == "pw"


def test_device_urls_take_no_credentials():
    cfg = base_config([{"id": "bd-1", "driver": "beidou", "url": f"tcp://u:{SECRET}@127.0.0.1:4001"}])
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert any(p == "devices[0].url" and "no user or password" in r for p, r in err.value.problems)
    assert SECRET not in str(err.value)


def test_redact_keeps_everything_but_the_user_information():
    from tianwang.gateway.errors import describe, redact

    assert redact(f"cannot connect to nats://bridge:{SECRET}@10.0.0.5:4222: refused") == (
        "cannot connect to nats://***@10.0.0.5:4222: refused"
    )
    assert redact(f"rtsp://admin:{SECRET}@10.0.0.1:554/s?x=1 and http://h/p@x") == (
        "rtsp://***@10.0.0.1:554/s?x=1 and http://h/p@x"
    )
    assert redact(f"nats://u:p@{SECRET}@h:1") == "nats://***@h:1"  # an unencoded @ in the password
    assert redact("no URL here, mail ops@example.org") == "no URL here, mail ops@example.org"
    assert SECRET not in describe(OSError(f"nats://u:{SECRET}@h:4222 unreachable"))


async def test_health_reasons_device_info_and_stats_are_redacted():
    async with (
        running(base_config([{"id": "gen-1", "driver": "testgen", "rate_hz": 0}])) as gw,
        client(gw) as (stub, _),
    ):
        entry = gw.supervisor.lookup("gen-1")
        await until(lambda: entry.state.value == "ONLINE", 10, "gen-1 ONLINE")
        # what a driver may say about its device, quoting a URL the device gave it
        from tianwang.drivers.sdk import Health

        entry.ctx.set_health(Health.DEGRADED, f"upstream rtsp://admin:{SECRET}@10.0.0.1/s is down")
        entry.ctx.set_info(stream_uri=f"rtsp://admin:{SECRET}@10.0.0.1/s")
        reply = await stub.ListDevices(pb.ListDevicesRequest(), metadata=md(READ))
        dev = reply.devices[0]
        assert dev.reason == "upstream rtsp://***@10.0.0.1/s is down"
        assert dev.info["stream_uri"] == "rtsp://***@10.0.0.1/s"
        from gw import journal_envelopes

        reasons = [e["payload"]["reason"] for e in journal_envelopes(gw.journal, "test/gen-1/health")]
        assert not [r for r in reasons if SECRET in r] and "upstream rtsp://***@10.0.0.1/s is down" in reasons
        # the gateway's own health reason, shown to every GetStats caller
        gw.journal.state, gw.journal.error = "failed", f"cannot write to nats://u:{SECRET}@h:4222"
        try:
            stats = await stub.GetStats(pb.GetStatsRequest(), metadata=md(READ))
        finally:
            gw.journal.state, gw.journal.error = "ok", ""
        assert stats.health == "DEGRADED" and "nats://***@h:4222" in stats.health_reason
        assert SECRET not in stats.health_reason


def test_log_lines_of_the_cli_are_redacted():
    code = (
        "import logging, sys\n"
        "from tianwang.gateway.cli.main import _setup_logging\n"
        "_setup_logging('info')\n"
        f"logging.getLogger('tianwang.bridge').warning('cannot reach %s', 'nats://u:{SECRET}@h:4222')\n"
        "try:\n"
        f"    raise OSError('nats://u:{SECRET}@h:4222 refused')\n"
        "except OSError:\n"
        "    logging.getLogger('tianwang.app').exception('failed')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert run.returncode == 0, run.stderr
    assert "cannot reach nats://***@h:4222" in run.stderr and "OSError: nats://***@h:4222 refused" in run.stderr
    assert SECRET not in run.stderr
