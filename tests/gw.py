"""Helpers for end-to-end tests: an in-process gateway on a real loopback port, a subprocess
gateway driven by signals, and gRPC clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import msgpack

from tianwang.gateway.app import Gateway
from tianwang.gateway.lifecycle.config import load_config
from tianwang.gateway.lifecycle.registry import Registry
from tianwang.v1 import gateway_pb2 as pb, gateway_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
READ = "read-token-0123456789"
CONTROL = "control-token-0123456789"
GNSS_ONLY = "gnss-token-0123456789"


def registry(*specs):
    """A registry with the test-only driver and `specs`."""
    import tw_testgen

    reg = Registry()
    reg.register(tw_testgen.SPEC)
    for spec in specs:
        reg.register(spec)
    return reg


def base_config(devices=(), listeners=(), control=("test/+",), **gateway):
    """A gateway on 127.0.0.1 (any port) with three tokens: READ (reads everything), CONTROL (reads
    everything, commands `control`) and GNSS_ONLY (reads gnss/# and test/gen-1/#, commands nothing)."""
    gw = {"name": "test", "listen": "127.0.0.1:0", "metrics": None}
    gw.update(gateway)
    return {
        "gateway": gw,
        "auth": {
            "allow_inline_secrets": True,  # the tokens below are written inline, on purpose
            "tokens": [
                {"name": "reader", "token": READ, "read": ["#"]},
                {"name": "operator", "token": CONTROL, "read": ["#"], "control": list(control)},
                {"name": "gis", "token": GNSS_ONLY, "read": ["gnss/#", "test/gen-1/#"]},
            ],
        },
        "devices": list(devices),
        "listeners": list(listeners),
    }


@contextlib.asynccontextmanager
async def running(config: dict, *specs):
    """An in-process Gateway for `config`, with the test driver and `specs` registered."""
    reg = registry(*specs)
    gw = Gateway(load_config(config, reg), registry=reg)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


def md(token):
    return (("authorization", f"Bearer {token}"),) if token else ()


@contextlib.asynccontextmanager
async def client(gw_or_addr, **options):
    addr = gw_or_addr if isinstance(gw_or_addr, str) else f"127.0.0.1:{gw_or_addr.port}"
    async with grpc.aio.insecure_channel(addr, options=list(options.items())) as ch:
        yield pb_grpc.GatewayStub(ch), ch


def unpack(b):
    return msgpack.unpackb(b, raw=False)


async def wait_for(predicate, timeout=5.0, interval=0.01):
    """True once `predicate()` is; False if it is not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return predicate()


async def until(predicate, timeout=5.0, what="condition"):
    """Wait for `predicate()`; fail the test naming `what` if it does not hold within `timeout`."""
    if not await wait_for(predicate, timeout):
        raise AssertionError(f"timed out waiting for {what}")


def journal_envelopes(journal, pattern="#"):
    """Every envelope held in `journal` whose topic matches `pattern`, payloads decoded."""
    from tianwang.gateway.framing import TopicFilter

    flt = TopicFilter([pattern])
    out = []
    cursor = journal.first_seq
    while cursor < journal.next_seq:
        data, n, cursor = journal.collect(cursor, flt, 4096, 1 << 22)
        if n:
            for env in pb.Batch.FromString(data).envelopes:
                out.append(
                    {
                        "seq": env.seq,
                        "topic": env.topic,
                        "device_id": env.device_id,
                        "device_time_ns": env.device_time_ns,
                        "payload": msgpack.unpackb(env.payload, raw=False),
                    }
                )
    return out


class GatewayProcess:
    """`tianwang run -c FILE` in a subprocess, with the test driver available."""

    def __init__(self, config_path, extra_env=None):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "plugins"), env.get("PYTHONPATH", "")])
        env["TIANWANG_DRIVER_MODULES"] = "tw_testgen"
        env.update(extra_env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tianwang", "run", "-c", str(config_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        # stderr is drained all the time: a full pipe would block the gateway's logging
        self._err: list[str] = []
        self._err_thread = threading.Thread(target=self._drain, daemon=True)
        self._err_thread.start()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise RuntimeError(f"gateway did not start: {self.stderr()}")
        self.ready = json.loads(line)
        self.addr = self.ready["listen"]

    def _drain(self):
        for raw in self.proc.stderr:
            self._err.append(raw.decode(errors="replace"))

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def wait(self, timeout):
        return self.proc.wait(timeout)

    def stderr(self):
        """What the process wrote to stderr so far (all of it once it has exited)."""
        if self.proc.poll() is not None:
            self._err_thread.join(5)
        return "".join(self._err)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
