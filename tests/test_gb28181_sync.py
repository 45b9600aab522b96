"""What the gb28181 listener asks of a device after it registers, and at what pace (sync.py): at
most `sync_window` devices are queried and subscribed at once, the next one starting as soon as one
has answered and sent its catalog (or let its catalog go late), so a register storm's queries follow
the devices' pace. Real UDP on loopback, tiny devices from tests/gb_helpers.py."""

from __future__ import annotations

import asyncio
import re

import pytest

from gb_helpers import GbDevice
from gw import until
from test_gb28181_listener import gateway, listener_config

pytestmark = pytest.mark.timeout(90)
IDS = [f"4303000000118000{i:04d}" for i in range(1, 6)]


def channel_ids(device_id, n):
    """Channel IDs (type 131) of their own under each device: serials from the device's."""
    return [f"{device_id[:10]}131{int(device_id[14:]) * 10 + i:07d}" for i in range(1, n + 1)]


def queried(devices):
    """The devices the listener has sent their Catalog query to."""
    return [d for d in devices if d.requests("MESSAGE", "Catalog")]


async def test_at_most_the_window_is_synced_at_once_and_the_next_starts_when_one_is_done(tmp_path):
    listener = listener_config(
        tmp_path,
        *IDS,
        keepalive={"interval_s": 60, "count": 3},
        subscribe={"catalog": True, "alarm": None, "mobile_position": None},
        sync_window=2,
        catalog_idle_s=1.5,
    )
    async with gateway(listener) as (gw, port):
        # devices that take the queries (SIP 200) but send their catalog only when the test says
        devices = [
            await GbDevice(
                port, dev_id, channels=[(c, "岳塘") for c in channel_ids(dev_id, 2)], answer_queries=False
            ).start()
            for dev_id in IDS
        ]
        try:
            for d in devices:
                assert (await d.register()).status == 200
            await until(lambda: len(queried(devices)) == 2, 10, "the first two devices queried")
            first, second = queried(devices)
            # every request of a device in the window is sent at once: its info, catalog, subscription
            await until(lambda: first.requests("SUBSCRIBE") and first.requests("MESSAGE", "DeviceInfo"), 5)
            await asyncio.sleep(0.5)
            assert len(queried(devices)) == 2  # the others wait: both places hold a catalog due

            # one catalog comes in: its place goes to the next device at once
            msg, text = first.requests("MESSAGE", "Catalog")[0]
            await first._answer(msg, text)
            await until(lambda: len(queried(devices)) == 3, 10, "a third device queried after a catalog came in")
            assert gw.supervisor.lookup(first.id).info.get("catalog") == "complete"
            assert second in queried(devices)

            # a catalog that never starts is let go after catalog_idle_s: the window does not stall
            await until(lambda: len(queried(devices)) == 5, 30, "every device queried in the end")
            late = sum(gw.supervisor.lookup(d.id).counters.get("sync_catalog_late", 0) for d in devices)
            assert late >= 2  # the second and every later device, whose catalogs never came
            assert gw.supervisor.lookup(first.id).counters.get("sync_catalog_late", 0) == 0
            # each device was synced once: one Catalog query, one catalog SUBSCRIBE
            assert all(len(d.requests("MESSAGE", "Catalog")) == 1 for d in devices)
            assert all(len(d.requests("SUBSCRIBE")) == 1 for d in devices)
        finally:
            for d in devices:
                await d.stop()


async def test_a_window_of_one_syncs_every_device_in_turn_without_retransmissions(tmp_path):
    listener = listener_config(
        tmp_path,
        *IDS,
        keepalive={"interval_s": 60, "count": 3},
        subscribe={"catalog": True, "alarm": None, "mobile_position": None},
        sync_window=1,
    )
    async with gateway(listener) as (gw, port):
        devices = [
            await GbDevice(port, dev_id, channels=[(c, "雨湖") for c in channel_ids(dev_id, 3)]).start()
            for dev_id in IDS
        ]
        try:
            # a window of one: each device in turn, each as soon as the one before sent its catalog
            await asyncio.gather(*(d.register() for d in devices))
            await until(
                lambda: all(gw.supervisor.lookup(d.id).info.get("catalog") == "complete" for d in devices),
                30,
                "every catalog in through a window of one",
            )
            for d in devices:
                assert all(gw.supervisor.lookup(c).state.value == "ONLINE" for c in channel_ids(d.id, 3))
                assert len(d.requests("MESSAGE", "Catalog")) == 1
            counters = gw.supervisor.lookup("gb").counters
            assert not counters.get("retransmissions")  # the pace the devices set: nothing resent
        finally:
            for d in devices:
                await d.stop()


async def test_a_register_storm_is_logged_as_a_summary_not_a_line_per_device(tmp_path, caplog):
    listener = listener_config(
        tmp_path,
        *IDS,
        keepalive={"interval_s": 60, "count": 3},
        subscribe={"catalog": True, "alarm": None, "mobile_position": None},
    )
    async with gateway(listener) as (gw, port):
        syncer = gw.supervisor._running["gb"].driver.syncer
        syncer.storm_min, syncer.summary_s = 1, 0.5  # five devices make a storm, summed up at every sweep
        devices = [
            await GbDevice(port, dev_id, channels=[(c, "韶山") for c in channel_ids(dev_id, 2)]).start()
            for dev_id in IDS
        ]
        try:
            with caplog.at_level("INFO", logger="tianwang.driver.gb28181"):
                await asyncio.gather(*(d.register() for d in devices))
                await until(lambda: "register storm over" in caplog.text, 20, "the storm's closing line")
            lines = [r.getMessage() for r in caplog.records if r.name == "tianwang.driver.gb28181"]
            storm = [line for line in lines if "register storm" in line]
            assert re.match(r"gb: register storm: [1-5] registrations in the last 0.5 s; ", storm[0])
            assert storm[-1].startswith("gb: register storm over: 5 registrations, 5 devices queried and subscribed")
            assert not any(d.id in line for d in devices for line in lines)  # no line names a device
        finally:
            for d in devices:
                await d.stop()


async def test_a_long_queue_of_devices_that_cannot_be_reached_is_passed_over_without_stalling(tmp_path):
    from tianwang.drivers.gb28181.driver import Route

    ids = [f"4303000000132{i:07d}" for i in range(1, 601)]
    listener = listener_config(
        tmp_path,
        *ids,
        IDS[0],
        keepalive={"interval_s": 60, "count": 3},
        subscribe={"catalog": True, "alarm": None, "mobile_position": None},
        sync_window=4,
    )
    async with gateway(listener) as (gw, port):
        driver = gw.supervisor._running["gb"].driver
        # registered over TCP, their connections gone since (restored after a restart, say): every
        # request to them fails at once, so each gives its place up as soon as it takes it
        for dev_id in ids:
            dev = driver.device(dev_id)
            dev.route = Route("TCP", ("127.0.0.1", 9), None)
            driver.apply(dev, dev.session.register(driver.loop.time(), 3600))
            driver.syncer.queue_sync(dev)
        await until(lambda: not driver.syncer.queue and not driver.syncer.places, 10, "the queue passed over")
        assert all(gw.supervisor.lookup(i).counters.get("messages_unsent", 0) == 2 for i in ids)  # DeviceInfo, Catalog
        # and the window still works for a device that can be reached
        nvr = await GbDevice(port, IDS[0]).start()
        try:
            assert (await nvr.register()).status == 200
            await until(lambda: nvr.requests("MESSAGE", "Catalog"), 10, "the reachable device queried")
        finally:
            await nvr.stop()
