"""Helpers for the ONVIF tests: simulated cameras on loopback and a gateway with the onvif driver."""

from __future__ import annotations

import contextlib

import tianwang.drivers.onvif as onvif
from gw import base_config, client, running
from tianwang.drivers.onvif.simulator import CameraSim

PASSWORD = "sim-pass-0123"


@contextlib.asynccontextmanager
async def camera(**options):
    options.setdefault("password", PASSWORD)
    sim = CameraSim(**options)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def device(sim, id="cam-1", **extra):
    entry = {
        "id": id,
        "driver": "onvif",
        "host": sim.host,
        "port": sim.port,
        "username": sim.username,
        "password": sim.password,
        "backoff": {"initial_s": 0.2, "max_s": 1.0},
    }
    entry.update(extra)
    return entry


@contextlib.asynccontextmanager
async def gateway(*devices, control=("camera/+",)):
    async with running(base_config(devices=list(devices), control=list(control), name="onvif"), onvif.SPEC) as gw:
        async with client(gw) as (stub, _):
            yield gw, stub


def entry(gw, device_id="cam-1"):
    return gw.supervisor.lookup(device_id)


def driver(gw, device_id="cam-1"):
    return gw.supervisor._running[device_id].driver
