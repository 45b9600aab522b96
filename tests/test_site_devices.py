"""Devices on a real site: a refused login is not retried on the normal backoff (a reload retries
at once), a label-only edit keeps the link, `enabled: false` keeps the device listed as disabled,
and the restart metrics tell a flapping link from a dead device, per driver and device."""

import asyncio
import re
import urllib.request

import pytest
import yaml

import tianwang.drivers.onvif as onvif
from gw import CONTROL, READ, ROOT, base_config, client, md, registry, until
from onvif_helpers import camera, device
from tianwang.drivers.sdk import DeviceConfig, Driver, DriverSpec, Health
from tianwang.gateway.app import Gateway
from tianwang.gateway.lifecycle.config import load_config
from tianwang.v1 import gateway_pb2 as pb

pytestmark = pytest.mark.timeout(90)


class LinkConfig(DeviceConfig):
    comes_up: bool = True  # False: the device never answers


class Link(Driver):
    """A device whose link comes up and drops at once (comes_up), or never comes up."""

    async def run(self):
        await asyncio.sleep(0.005)
        if not self.config.comes_up:
            raise ConnectionError("no answer")
        self.ctx.set_health(Health.ONLINE)
        await asyncio.sleep(0.005)
        raise ConnectionError("link dropped")


LINK = DriverSpec(name="linktest", family="test", config_model=LinkConfig, factory=Link)
FAST = {"initial_s": 0.01, "max_s": 0.02}


async def start(tmp_path, cfg, *specs):
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(cfg))
    reg = registry(*specs)
    gw = Gateway(load_config(str(path), reg), registry=reg, config_path=str(path))
    await gw.start()
    return gw, path


def health_states(gw, dev_id):
    from gw import journal_envelopes

    return [e["payload"]["state"] for e in journal_envelopes(gw.journal, f"+/{dev_id}/health")]


# -- 6. refused logins ----------------------------------------------------------------------------
async def test_a_refused_login_waits_minutes_and_a_reload_retries_at_once(tmp_path):
    async with camera() as sim:
        cam = device(sim, password="not-the-password", backoff={"initial_s": 0.05, "max_s": 0.1})
        gw, path = await start(tmp_path, base_config([cam], control=("camera/+",)), onvif.SPEC)
        try:
            entry = gw.supervisor.lookup("cam-1")
            await until(
                lambda: entry.state == Health.OFFLINE and "authentication failed" in entry.reason,
                20,
                "the refused login",
            )
            assert entry.reason.startswith("authentication failed: fix the password and reload; next attempt in 15 min")
            failures = sim.counters["auth_failures"]
            # on the normal backoff (50-100 ms) this would be a dozen more logins: the camera locks the user
            await asyncio.sleep(1.5)
            assert sim.counters["auth_failures"] == failures
            assert entry.counters["auth_failures"] == 1
            # a reload of the same file retries at once (one more attempt, not a storm)
            assert await gw.reload()
            await until(lambda: sim.counters["auth_failures"] > failures, 10, "the retry after the reload")
            await until(lambda: entry.counters.get("auth_failures") == 2, 10, "the second refusal")
            # the right password, and a reload: ONLINE
            cfg = base_config([device(sim, backoff=FAST)], control=("camera/+",))
            path.write_text(yaml.safe_dump(cfg))
            assert await gw.reload()
            await until(lambda: gw.supervisor.lookup("cam-1").state == Health.ONLINE, 20, "ONLINE")
        finally:
            await gw.stop()


async def test_a_changed_password_file_is_tried_at_once_without_a_reload(tmp_path):
    async with camera() as sim:
        secret = tmp_path / "cam-1.pass"
        secret.write_text("not-the-password\n")
        cam = device(sim, backoff={"initial_s": 0.05, "max_s": 0.1})
        del cam["password"]
        cam["password_file"] = str(secret)
        gw, _ = await start(tmp_path, base_config([cam], control=("camera/+",)), onvif.SPEC)
        try:
            entry = gw.supervisor.lookup("cam-1")
            await until(lambda: "authentication failed" in entry.reason, 20, "the refused login")
            secret.write_text(sim.password + "\n")
            await until(
                lambda: gw.supervisor.lookup("cam-1").state == Health.ONLINE, 20, "ONLINE with the new password"
            )
            assert entry.counters["auth_failures"] == 1
        finally:
            await gw.stop()


# -- 7. label-only edits ------------------------------------------------------------------------
async def test_a_label_only_edit_applies_without_a_restart(tmp_path):
    cfg = base_config([{"id": "g", "driver": "testgen", "rate_hz": 50, "labels": {"site": "north"}}])
    gw, path = await start(tmp_path, cfg)
    try:
        await until(lambda: gw.supervisor.lookup("g").state == Health.ONLINE, 10, "ONLINE")
        before = gw.supervisor._running["g"].driver
        cfg["devices"][0]["labels"] = {"site": "south", "pole": "17"}
        cfg["devices"][0]["backoff"] = {"initial_s": 1.0, "max_s": 5.0}
        path.write_text(yaml.safe_dump(cfg))
        assert await gw.reload()
        running = gw.supervisor._running["g"]
        assert running.driver is before  # the same driver, its link untouched
        entry = gw.supervisor.lookup("g")
        assert entry.info["site"] == "south" and entry.info["pole"] == "17"
        assert running.config.backoff.initial_s == 1.0
        assert health_states(gw, "g") == ["CONNECTING", "ONLINE"]  # no OFFLINE/CONNECTING at the reload
        cfg["devices"][0]["labels"] = {"pole": "17"}
        path.write_text(yaml.safe_dump(cfg))
        assert await gw.reload()
        assert "site" not in gw.supervisor.lookup("g").info
        # a change that touches the device still restarts it
        cfg["devices"][0]["rate_hz"] = 60
        path.write_text(yaml.safe_dump(cfg))
        assert await gw.reload()
        assert gw.supervisor._running["g"].driver is not before
    finally:
        await gw.stop()


# -- 8. enabled: false --------------------------------------------------------------------------
async def test_a_disabled_device_stays_listed_and_its_commands_say_why(tmp_path):
    cfg = base_config(
        [
            {"id": "g", "driver": "testgen", "rate_hz": 5},
            {"id": "off", "driver": "testgen", "enabled": False, "labels": {"site": "north"}},
        ]
    )
    gw, path = await start(tmp_path, cfg)
    try:
        async with client(gw) as (stub, _):
            reply = await stub.ListDevices(pb.ListDevicesRequest(), metadata=md(READ))
            off = next(d for d in reply.devices if d.id == "off")
            assert off.state == "DISABLED" and off.reason == "disabled in config (enabled: false)"
            assert off.info["site"] == "north"
            only = await stub.ListDevices(pb.ListDevicesRequest(state="DISABLED"), metadata=md(READ))
            assert [d.id for d in only.devices] == ["off"]
            r = await stub.SendCommand(pb.CommandRequest(device_id="off", action="echo"), metadata=md(CONTROL))
            assert not r.ok and r.code == "OFFLINE" and "disabled in config (enabled: false)" in r.message
            # a running device disabled by a reload stays listed too
            cfg["devices"][0]["enabled"] = False
            path.write_text(yaml.safe_dump(cfg))
            assert await gw.reload()
            assert "g" not in gw.supervisor._running
            assert gw.supervisor.lookup("g").state == Health.DISABLED
            # and enabled again, it runs
            cfg["devices"][0]["enabled"] = True
            path.write_text(yaml.safe_dump(cfg))
            assert await gw.reload()
            await until(lambda: gw.supervisor.lookup("g").state == Health.ONLINE, 10, "ONLINE again")
    finally:
        await gw.stop()


# -- 11. restart metrics ------------------------------------------------------------------------
def _alert(name):
    text = (ROOT / "docs" / "operator.md").read_text()
    m = re.search(rf"alert: {name}\b.*?\n\s+expr: (.+)\n", text, re.S)
    return m.group(1)


def _metric(text, name, device):
    m = re.search(rf'^{name}\{{device="{device}",driver="linktest"\}} ([0-9.e+]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


async def test_restart_metrics_tell_a_flapping_link_from_a_dead_device(tmp_path):
    cfg = base_config(
        [
            {"id": "flapping", "driver": "linktest", "backoff": FAST},
            {"id": "dead", "driver": "linktest", "comes_up": False, "backoff": FAST},
        ],
        metrics="127.0.0.1:0",
    )
    gw, _ = await start(tmp_path, cfg, LINK)
    try:
        sup = gw.supervisor
        await until(
            lambda: (
                sup.link_drops.get(("linktest", "flapping"), 0) > 6
                and sup.failed_attempts.get(("linktest", "dead"), 0) > 6
            ),
            20,
            "flaps and failures",
        )
        url = f"http://127.0.0.1:{gw.metrics_port}/metrics"
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
    finally:
        await gw.stop()
    # the alert's threshold, applied to what the gateway counted since it started (< 30 min ago)
    flapping = _alert("TianwangLinksFlapping")
    metric, threshold = re.search(r"increase\((tianwang_\w+)\[30m\]\)\) > (\d+)", flapping).groups()
    assert metric == "tianwang_link_drops_total" and "device" in flapping and "driver" in flapping
    assert _metric(text, metric, "flapping") > int(threshold)  # fires for the link that flaps
    assert _metric(text, metric, "dead") == 0  # and not for the device that is simply down
    assert _metric(text, "tianwang_connect_failures_total", "dead") > int(threshold)
    assert _metric(text, "tianwang_connect_failures_total", "flapping") == 0
    assert "tianwang_connect_failures_total" in _alert("TianwangDeviceUnreachable")


async def test_nats_refused_credentials_wait_and_a_reload_with_new_ones_connects(tmp_path):
    from nats_helpers import NatsServer

    class TokenServer(NatsServer):
        def args(self):
            return super().args() + ["--auth", "right-token-0123"]

    server = TokenServer(tmp_path / "nats").start()
    try:
        cfg = base_config([{"id": "g", "driver": "testgen", "rate_hz": 5}])
        cfg["bridges"] = {"nats": {"servers": [server.url], "token": "wrong-token-0123"}}
        gw, path = await start(tmp_path, cfg)
        try:
            await until(
                lambda: gw.bridge.reason.startswith("authentication failed: fix the credentials and reload"),
                20,
                "the refused login",
            )

            def refused():
                return server.log.read_text().count("authentication error")

            await until(lambda: refused() >= 1, 10, "the server's log line")
            seen = refused()
            # nats-py on its own would log in again every 0.5 s; the bridge waits minutes
            await asyncio.sleep(2.0)
            assert refused() == seen
            cfg["bridges"]["nats"]["token"] = "right-token-0123"
            path.write_text(yaml.safe_dump(cfg))
            assert await gw.reload()
            await until(lambda: gw.bridge.state == "ok", 20, "the bridge publishing")
        finally:
            await gw.stop()
    finally:
        server.stop()
