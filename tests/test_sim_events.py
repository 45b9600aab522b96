"""The simulators say on stderr when the gateway drops them (issue 8): a terminal whose connection
the gateway closes, a simulated server the gateway connects to and leaves. At most ten such lines a
second; the rest are counted into one line."""

import asyncio
import io
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tianwang.gateway.cli.simulate import EventPrinter

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(60)


def _spawn(*args):
    proc = subprocess.Popen(
        [sys.executable, "-m", "tianwang", "simulate", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=dict(os.environ),
    )
    proc.err_lines = queue.Queue()
    threading.Thread(
        target=lambda: [proc.err_lines.put(line.rstrip("\n")) for line in proc.stderr], daemon=True
    ).start()
    return proc


def _stop(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=15)
    assert proc.returncode == 0


def _read_stderr_until(proc, needle: str, timeout: float = 15.0) -> list[str]:
    """stderr lines up to and including the first one that contains `needle`."""
    lines, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            line = proc.err_lines.get(timeout=0.1)
        except queue.Empty:
            continue
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"no stderr line with {needle!r} within {timeout} s; got {lines}")


def test_printer_prints_ten_lines_a_second_and_counts_the_rest():
    out, now = io.StringIO(), [100.0]
    p = EventPrinter("jt808", out=out, clock=lambda: now[0])
    for i in range(25):
        p(f"terminal {i}: the gateway closed the connection; reconnecting")
    assert out.getvalue().count("\n") == 10 and "terminal 9:" in out.getvalue() and "terminal 10:" not in out.getvalue()
    p.tick()  # the second is not over: still held
    assert out.getvalue().count("\n") == 10
    now[0] += 1.0
    p.tick()
    last = out.getvalue().splitlines()[-1]
    assert last == "simulate jt808: ... and 15 more connection event(s) in that second"
    p("terminal 99: the gateway closed the connection; reconnecting")  # a new second prints again
    assert out.getvalue().splitlines()[-1].startswith("simulate jt808: terminal 99:")
    p.flush()  # nothing held: nothing more
    assert out.getvalue().count("\n") == 12


async def test_jt808_terminal_says_when_the_gateway_closes_its_connection():
    accepted = []

    async def slam(reader, writer):  # a gateway that drops every terminal as soon as it speaks
        accepted.append(1)
        await reader.read(1)
        writer.transport.abort()

    server = await asyncio.start_server(slam, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proc = _spawn("jt808", "--connect", f"127.0.0.1:{port}", "--terminals", "2", "--phone-base", "13300000000")
    try:
        json.loads(await asyncio.to_thread(proc.stdout.readline))
        lines = await asyncio.to_thread(_read_stderr_until, proc, "the gateway closed the connection")
        line = next(x for x in lines if "the gateway closed the connection" in x)
        assert line.startswith("simulate jt808: terminal 1330000000") and line.endswith("reconnecting")
    finally:
        server.close()
        await asyncio.to_thread(_stop, proc)
    assert accepted


def test_jt808_terminal_says_once_when_it_cannot_reach_the_gateway():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _spawn("jt808", "--connect", f"127.0.0.1:{port}", "--terminals", "1")
    try:
        json.loads(proc.stdout.readline())
        line = _read_stderr_until(proc, "cannot connect")[-1]
        assert (
            line
            == f"simulate jt808: terminal 13800000000: cannot connect to 127.0.0.1:{port} (Connection refused); retrying"
        )
        time.sleep(2.0)  # it keeps retrying (backoff 0.5 s, 1 s...) but says it only once
        assert proc.err_lines.empty()
    finally:
        _stop(proc)


def test_beidou_tcp_simulator_says_when_the_gateway_connects_and_leaves():
    proc = _spawn("beidou", "--transport", "tcp", "--rate", "1")
    try:
        url = json.loads(proc.stdout.readline())["url"]
        host, port = url.removeprefix("tcp://").rsplit(":", 1)
        client = socket.create_connection((host, int(port)))
        here = "%s:%d" % client.getsockname()
        lines = _read_stderr_until(proc, "connected from")
        assert any(x == f"simulate beidou: a client connected from {here}" for x in lines), lines
        client.close()
        lines = _read_stderr_until(proc, "disconnected")
        assert any(x == f"simulate beidou: the client from {here} disconnected" for x in lines), lines
    finally:
        _stop(proc)


def test_signal_tcp_simulator_says_when_the_gateway_leaves():
    proc = _spawn("signal", "--transport", "tcp")
    try:
        url = json.loads(proc.stdout.readline())["url"]
        host, port = url.removeprefix("tcp://").rsplit(":", 1)
        client = socket.create_connection((host, int(port)))
        lines = _read_stderr_until(proc, "the gateway connected")
        assert any(x.startswith("simulate signal: controller ") for x in lines), lines
        client.close()
        lines = _read_stderr_until(proc, "the gateway closed the connection")
        assert any(
            x.startswith("simulate signal: controller ") and x.endswith("the gateway closed the connection")
            for x in lines
        ), lines
    finally:
        _stop(proc)
