"""Event subscriptions through the field failures the simulator reproduces: short grants (renewed in
time), a camera that forgets its subscription (lapse -> re-subscribe), no free slot (DEGRADED with
the reason, then recovery), a restart, slow replies, and the webhook (base notification) mode."""

import datetime as dt

import pytest

from gw import journal_envelopes, until
from onvif_helpers import camera, device, driver, entry, gateway

pytestmark = pytest.mark.timeout(120)


def events(gw):
    return entry(gw).counters.get("events", 0)


async def test_short_grant_is_renewed_before_it_lapses():
    # 4 s grants: the library's own timer (80% of at least 60 s) would let every one lapse
    async with camera(rate=5, max_grant_s=4) as sim, gateway(device(sim, pull_timeout_s=2)) as (gw, _):
        await until(lambda: sim.counters["renewals"] >= 3, 40, "three renewals")
        assert sim.counters["subscriptions_created"] == 1
        assert sim.counters.get("subscriptions_expired", 0) == 0
        assert entry(gw).counters.get("resubscriptions", 0) == 0
        before = events(gw)
        await until(lambda: events(gw) > before + 5, 20, "events keep coming")


async def test_lapsed_subscription_is_created_again():
    async with camera(rate=5) as sim, gateway(device(sim, pull_timeout_s=2)) as (gw, _):
        await until(lambda: events(gw) >= 3, 20, "first events")
        # the camera forgets the subscription (a firmware that drops it, or a lapse)
        sim.subs.clear()
        await until(lambda: entry(gw).counters.get("resubscriptions", 0) >= 1, 20, "lost subscription noticed")
        await until(lambda: sim.counters["subscriptions_created"] >= 2, 20, "a new subscription")
        before = events(gw)
        await until(lambda: events(gw) > before + 3, 20, "events after re-subscribing")
        assert entry(gw).state.value == "ONLINE"


async def test_no_free_slot_is_degraded_then_recovers():
    from onvif import ONVIFCamera

    async with camera(rate=5, slots=1) as sim:
        # another client holds the camera's only subscription slot
        other = ONVIFCamera(sim.host, sim.port, sim.username, sim.password, no_cache=True, adjust_time=True)
        await other.update_xaddrs()
        held = await other.create_pullpoint_manager(dt.timedelta(seconds=60), lambda: None)
        try:
            async with gateway(device(sim, pull_timeout_s=2)) as (gw, _):
                await until(lambda: "no free subscription slot" in entry(gw).reason, 20, "slot reason")
                assert entry(gw).state.value == "DEGRADED"
                assert entry(gw).counters.get("subscriptions_refused", 0) >= 1
                await held.shutdown()  # the other client lets go
                held = None
                await until(lambda: entry(gw).state.value == "ONLINE", 30, "ONLINE once a slot is free")
                await until(lambda: events(gw) >= 3, 20, "events after recovery")
        finally:
            if held is not None:
                await held.shutdown()
            await other.close()
        assert not sim.subs  # our subscription was given back on shutdown


async def test_camera_restart_reconnects_and_resubscribes():
    async with camera(rate=5) as sim, gateway(device(sim, pull_timeout_s=2)) as (gw, _):
        await until(lambda: events(gw) >= 3, 20, "first events")
        await sim.restart(down_s=1.0)
        assert sim.boots == 2
        await until(lambda: sim.counters["subscriptions_created"] >= 2, 30, "subscribed again after the restart")
        before = events(gw)
        await until(lambda: events(gw) > before + 3, 20, "events after the restart")
        assert entry(gw).state.value == "ONLINE"
        assert len(sim.subs) == 1


async def test_slow_camera_does_not_hold_up_another():
    async with camera(rate=5, delay_s=5) as slow, camera(rate=5) as fast:
        devs = [device(slow, id="cam-slow", timeout_s=1), device(fast, id="cam-fast", pull_timeout_s=2)]
        async with gateway(*devs) as (gw, _):
            await until(lambda: entry(gw, "cam-fast").counters.get("events", 0) >= 10, 30, "fast camera events")
            await until(lambda: "no reply" in entry(gw, "cam-slow").reason, 20, "slow camera timeout reason")
            assert entry(gw, "cam-slow").state.value in ("OFFLINE", "CONNECTING")  # between retries


async def test_webhook_events_two_cameras_one_port():
    async with camera(rate=5) as one, camera(rate=5) as two:
        hook = {"listen": "127.0.0.1:0"}
        devs = [
            device(one, id="cam-1", events="webhook", webhook=hook),
            device(two, id="cam-2", events="webhook", webhook=hook),
        ]
        async with gateway(*devs) as (gw, _):
            await until(
                lambda: events(gw) >= 5 and entry(gw, "cam-2").counters.get("events", 0) >= 5,
                30,
                "events through the webhook from both cameras",
            )
            shown1, shown2 = entry(gw, "cam-1").info["webhook"], entry(gw, "cam-2").info["webhook"]
            # the path's secret part is never shown
            assert shown1.startswith("http://127.0.0.1:") and shown1.endswith("/cam-1/***")
            assert shown2.endswith("/cam-2/***")
            url1 = driver(gw, "cam-1").webhook_url
            assert url1.rsplit("/", 2)[0] == driver(gw, "cam-2").webhook_url.rsplit("/", 2)[0]  # one server, one port
            assert one.counters["notify_ok"] >= 5 and two.counters["notify_ok"] >= 5
            assert one.counters["op_Subscribe"] == two.counters["op_Subscribe"] == 1
            # a Notify for a camera the gateway does not have is refused, not published
            import aiohttp

            async with aiohttp.ClientSession() as http:
                async with http.post(url1.rsplit("/", 2)[0] + "/cam-9/x", data=b"<x/>") as r:
                    assert r.status == 404
                async with http.post(url1, data=b"not xml") as r:
                    assert r.status == 400
            assert entry(gw).counters.get("dropped_bad_notify", 0) == 1
        await until(lambda: not one.subs and not two.subs, 5, "unsubscribed on shutdown")


def notify(*messages):
    """A Notify POST body carrying `messages` (notification messages as the camera writes them)."""
    from tianwang.drivers.onvif import soap

    header = "<wsa:Action>http://docs.oasis-open.org/wsn/bw-2/NotificationConsumer/Notify</wsa:Action>"
    return soap.envelope(f"<wsnt:Notify>{''.join(messages)}</wsnt:Notify>", header)


def motion(sim, n=0):
    from tianwang.drivers.onvif import simulator as s, soap

    return soap.notification_message(
        s.MOTION,
        sim.now(),
        {
            "VideoSourceConfigurationToken": s.SOURCE_CONF,
            "VideoAnalyticsConfigurationToken": s.ANALYTICS_CONF,
            "Rule": f"Motion{n}",
        },
        {"IsMotion": "true"},
    )


async def test_the_webhook_takes_only_the_camera_on_its_own_path_and_bounds_each_post():
    """Issue 20 item 12: a forged Notify (another address, or no secret) is refused and never
    published; a Notify is bounded in bytes and in messages; the 0.0.0.0 listen address is never
    what the camera is told."""
    import aiohttp

    async with camera(rate=0) as sim:
        dev = device(sim, events="webhook", webhook={"listen": "0.0.0.0:0"}, pull_limit=5)
        async with gateway(dev) as (gw, _):
            await until(lambda: driver(gw).webhook_url and sim.counters["op_Subscribe"] == 1, 20, "subscribed")
            url = driver(gw).webhook_url
            # worked out: the address this host reaches the camera from (loopback here), not 0.0.0.0
            assert url.startswith("http://127.0.0.1:") and "0.0.0.0" not in url
            base, secret = url.rsplit("/", 1)
            assert len(secret) >= 32

            def published():
                return journal_envelopes(gw.journal, "camera/cam-1/event/#")

            async with aiohttp.ClientSession() as http:
                # the old guessable path, and a wrong secret: 404, nothing published
                for target in (base, base + "/guess"):
                    async with http.post(target, data=notify(motion(sim))) as r:
                        assert r.status == 404
                # the right path from another address (the rest of 127/8 is loopback too)
                other = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
                async with aiohttp.ClientSession(connector=other) as forger:
                    async with forger.post(url, data=notify(motion(sim))) as r:
                        assert r.status == 404
                assert not published()
                # (the old path matches no route at all; the two others reached the camera's handler)
                assert entry(gw).counters["dropped_webhook_refused"] == 2
                # too big: refused before it is parsed
                async with http.post(url, data=notify(*[motion(sim, i) for i in range(2000)])) as r:
                    assert r.status == 413
                # more messages than pull_limit: the first 5 published, the rest counted
                async with http.post(url, data=notify(*[motion(sim, i) for i in range(8)])) as r:
                    assert r.status == 200
                assert len(published()) == 5
                assert entry(gw).counters["dropped_too_many_messages"] == 3
