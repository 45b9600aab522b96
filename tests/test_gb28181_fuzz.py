"""Hypothesis against the running gb28181 listener over real UDP and TCP sockets: arbitrary bytes,
mutated SIP messages, and arbitrary MANSCDP bodies from a registered device. Whatever arrives is
answered or dropped with a reason and counted, never an internal error; the listener stays ONLINE
and the device keeps being served."""

from __future__ import annotations

import asyncio
import socket
import threading
from xml.sax.saxutils import escape

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import tianwang.drivers.gb28181 as gb28181
from gb_helpers import NVR_ID, PASSWORD, SERVER_ID, GbDevice, xml
from gw import base_config, running, until

pytestmark = pytest.mark.timeout(180)
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class GatewayThread:
    """A gateway with a gb28181 listener on its own loop in a thread, and a device registered to it."""

    def __init__(self, tmp_path):
        path = tmp_path / "gb-devices.yaml"
        path.write_text(f"- {{id: '{NVR_ID}', password: '{PASSWORD}'}}\n", encoding="utf-8")
        path.chmod(0o600)
        self.listener = {
            "id": "gb",
            "driver": "gb28181",
            "listen": "127.0.0.1:0",
            "server_id": SERVER_ID,
            "devices_file": str(path),
            "subscribe": {"catalog": False},
            "unknown_per_s": 100000,
            "unknown_burst": 100000,
        }
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stopping = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.task = asyncio.run_coroutine_threadsafe(self._run(), self.loop)
        if not self.ready.wait(30):
            raise RuntimeError(f"gateway did not start: {self.task}")

    async def _run(self):
        self.stopping = asyncio.Event()
        async with running(base_config(listeners=[self.listener], name="fuzz"), gb28181.SPEC) as gw:
            self.gw = gw
            entry = gw.supervisor.lookup("gb")
            await until(lambda: "listen" in entry.info, what="listener bound")
            self.port = int(entry.info["listen"].rsplit(":", 1)[1])
            self.device = await GbDevice(self.port, NVR_ID).start()
            assert (await self.device.register()).status == 200
            self.ready.set()
            await self.stopping.wait()
            await self.device.stop()

    def call(self, coro, timeout=10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def counters(self, dev_id="gb"):
        return dict(self.gw.supervisor.lookup(dev_id).counters)

    def close(self):
        self.loop.call_soon_threadsafe(self.stopping.set)
        self.task.result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    g = GatewayThread(tmp_path_factory.mktemp("gbfuzz"))
    yield g
    g.close()


def _udp(port, data):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(data, ("127.0.0.1", port))


def _tcp(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)


def _keepalive_bytes(body: bytes, transport="UDP") -> bytes:
    from tianwang.drivers.gb28181 import sip

    return sip.build_request(
        "MESSAGE",
        f"sip:{SERVER_ID}@127.0.0.1:5060",
        via_host="127.0.0.1",
        via_port=5999,
        transport=transport,
        from_uri=f"sip:{NVR_ID}@4303000000",
        from_tag="fz",
        to_uri=f"sip:{SERVER_ID}@4303000000",
        call_id=sip.new_call_id(),
        cseq=1,
        body=body,
        content_type="Application/MANSCDP+xml",
    ).to_bytes()


def _still_serving(gateway):
    assert gateway.call(gateway.device.keepalive()).status == 200
    counters = gateway.counters()
    assert not counters.get("dropped_internal_error") and not gateway.counters(NVR_ID).get("dropped_internal_error")
    assert gateway.gw.supervisor.lookup("gb").state.value == "ONLINE"


@FUZZ
@given(data=st.binary(max_size=3000), tcp=st.booleans())
def test_arbitrary_bytes(gateway, data, tcp):
    (_tcp if tcp else _udp)(gateway.port, data)


@FUZZ
@given(cut=st.integers(0, 2000), junk=st.binary(min_size=1, max_size=40), tcp=st.booleans())
def test_mutated_sip_messages(gateway, cut, junk, tcp):
    good = _keepalive_bytes(xml("Notify", "Keepalive", 7, NVR_ID, "<Status>OK</Status>\r\n"), "TCP" if tcp else "UDP")
    at = cut % (len(good) + 1)
    (_tcp if tcp else _udp)(gateway.port, good[:at] + junk + good[at:])


_XML_TEXT = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=60),
    st.from_regex(r"-?[0-9]{1,4}(\.[0-9]{1,6})?", fullmatch=True),  # numbers: in and out of range
    st.sampled_from(["ON", "OFF", "OK", "ERROR", "2026-12-07T17:30:00", "25", "VLOST", "ADD", "DEL"]),
)


@FUZZ
@given(
    root=st.sampled_from(["Notify", "Response", "Query", "Control", "Bogus"]),
    cmd=st.sampled_from(["Keepalive", "Alarm", "MobilePosition", "Catalog", "DeviceInfo", "RecordInfo", "X"]),
    fields=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "Status",
                    "AlarmMethod",
                    "AlarmType",
                    "Longitude",
                    "Latitude",
                    "SumNum",
                    "DeviceList",
                    "Item",
                    "Info",
                    "Speed",
                    "Time",
                    "AlarmPriority",
                ]
            ),
            _XML_TEXT,
        ),
        max_size=8,
    ),
    tail=st.binary(max_size=30),
    tcp=st.booleans(),
)
def test_arbitrary_manscdp_bodies_from_a_registered_device(gateway, root, cmd, fields, tail, tcp):
    # text escaped, so most bodies are well-formed and reach the typed readers behind the parser
    inner = "".join(f"<{k}>{escape(v)}</{k}>\r\n" for k, v in fields)
    body = xml(root, cmd, 9, NVR_ID, inner, charset="UTF-8") + tail
    (_tcp if tcp else _udp)(gateway.port, _keepalive_bytes(body, "TCP" if tcp else "UDP"))


def test_after_the_fuzz_the_listener_still_serves_and_counted_every_bad_input(gateway):
    _still_serving(gateway)
    listener = gateway.counters()
    device = gateway.counters(NVR_ID)
    drops = {k: v for c in (listener, device) for k, v in c.items() if k.startswith("dropped_")}
    assert drops, (listener, device)
