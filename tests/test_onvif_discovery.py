"""WS-Discovery: the asyncio prober against the simulator's responder, directly on loopback and by
multicast across a veth pair into a network namespace (where this machine lets us make one)."""

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid

import pytest

from onvif_helpers import camera
from tianwang.drivers.onvif import discovery

pytestmark = pytest.mark.timeout(60)


async def test_direct_probe_on_loopback_finds_the_camera():
    async with camera(rate=0, discovery_port=0) as sim:
        found = await discovery.probe(timeout=1.0, address="127.0.0.1", port=sim.discovery_port)
        assert len(found) == 1
        m = found[0]
        assert m.address == "127.0.0.1"
        assert m.xaddrs == (f"{sim.url}/onvif/device_service",)
        assert m.endpoint == sim.endpoint
        assert "onvif://www.onvif.org/name/cam" in m.scopes
        assert "dn:NetworkVideoTransmitter" in m.types


async def test_responder_and_prober_survive_garbage():
    async with camera(rate=0, discovery_port=0) as sim:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for junk in (b"", b"\x00" * 100, b"<not xml", b"<?xml version='1.0'?><a/>", os.urandom(2000)):
                s.sendto(junk, ("127.0.0.1", sim.discovery_port))
        # a ProbeMatches for another probe and junk sent at the prober are ignored
        assert discovery.parse_probe_matches(b"<junk", "x") == ("", [])
        assert discovery.parse_probe(b"\xff\xfe") is None
        found = await discovery.probe(timeout=1.0, address="127.0.0.1", port=sim.discovery_port)
        assert [m.endpoint for m in found] == [sim.endpoint]


async def test_probe_of_an_address_where_nothing_answers_finds_nothing():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert await discovery.probe(timeout=0.5, address="127.0.0.1", port=port) == []


def _cli(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "tianwang", *args], capture_output=True, text=True, timeout=timeout)


async def test_cli_discover_prints_the_camera():
    async with camera(rate=0, discovery_port=0) as sim:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tianwang",
            "discover",
            "--address",
            f"127.0.0.1:{sim.discovery_port}",
            "--timeout",
            "1",
            "--json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err
        (line,) = out.decode().splitlines()
        got = json.loads(line)
        assert got["xaddrs"] == [f"{sim.url}/onvif/device_service"] and got["address"] == "127.0.0.1"


def test_cli_discover_bad_options_are_one_line():
    for args, rc in (
        (["--timeout", "0"], 2),
        (["--address", "no such host.invalid:1", "--timeout", "0.2"], 1),
        (["--interface", "eth0"], 2),
    ):
        r = _cli("discover", *args)
        assert r.returncode == rc, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        assert r.stderr.startswith("tianwang discover: ")


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a network namespace and a veth pair (uid is not 0)"
    if shutil.which("ip") is None:
        return "the `ip` tool (iproute2) is not installed"
    name = f"twchk{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode != 0:
        return f"`ip netns add` is not allowed here: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def test_multicast_probe_across_a_veth_pair_into_a_namespace():
    why = _netns_unavailable()
    if why:
        pytest.skip(why)
    tag = uuid.uuid4().hex[:6]
    ns, host_if, ns_if = f"twd{tag}", f"twa{tag}", f"twb{tag}"
    octet = int(tag[:2], 16) % 200 + 20
    host_ip, ns_ip = f"10.214.{octet}.1", f"10.214.{octet}.2"
    setup = [
        ["ip", "netns", "add", ns],
        ["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if],
        ["ip", "link", "set", ns_if, "netns", ns],
        ["ip", "addr", "add", f"{host_ip}/24", "dev", host_if],
        ["ip", "link", "set", host_if, "up"],
        ["ip", "netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/24", "dev", ns_if],
        ["ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up"],
        ["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"],
    ]
    sim = None
    try:
        for cmd in setup:
            subprocess.run(cmd, check=True, capture_output=True)
        sim = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                sys.executable,
                "-m",
                "tianwang",
                "simulate",
                "onvif",
                "--host",
                ns_ip,
                "--discovery-port",
                "3702",
                "--discovery-multicast",
                "--rate",
                "0",
                "--stats-interval",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready = json.loads(sim.stdout.readline())
        assert ready["url"].startswith(f"http://{ns_ip}:")
        # multicast out of the host end of the pair; the camera answers by unicast
        r = _cli("discover", "--interface", host_ip, "--timeout", "2", "--json")
        assert r.returncode == 0, r.stderr
        found = [json.loads(line) for line in r.stdout.splitlines()]
        assert [(f["address"], f["xaddrs"]) for f in found] == [(ns_ip, [f"{ready['url']}/onvif/device_service"])]
    finally:
        if sim is not None:
            sim.terminate()
            try:
                sim.wait(10)
            except subprocess.TimeoutExpired:
                sim.kill()
                sim.wait(5)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
