"""The beidou driver's serial transport on a real pty: every byte arrives in order through one
`os.read` per readiness, and a hang-up closes the line with pyserial's SerialException."""

import asyncio
import os
import tty

import pytest
import serial

from tianwang.drivers.beidou.serial_line import FastReadTransport, open_serial

pytestmark = pytest.mark.timeout(30)


class Collect(asyncio.Protocol):
    def __init__(self):
        self.data = bytearray()
        self.more = asyncio.Event()
        self.lost = asyncio.get_running_loop().create_future()

    def data_received(self, data):
        self.data += data
        self.more.set()

    def connection_lost(self, exc):
        self.lost.set_result(exc)


async def test_a_pty_reads_every_byte_in_order_and_a_hang_up_closes_with_a_serial_error():
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    loop = asyncio.get_running_loop()
    proto = Collect()
    transport = await open_serial(loop, proto, os.ttyname(slave), {"baudrate": 115200})
    try:
        assert isinstance(transport, FastReadTransport)
        sent = b"".join(b"$GNGGA,%06d.00,,,,,0,00,,,M,,M,,*00\r\n" % i for i in range(200))
        for k in range(0, len(sent), 333):  # chunks that split sentences anywhere
            os.write(master, sent[k : k + 333])
        while len(proto.data) < len(sent):
            proto.more.clear()
            await asyncio.wait_for(proto.more.wait(), 10)
        assert bytes(proto.data) == sent
        os.close(slave)
        slave = -1
        os.close(master)  # the far side hangs up: the pty reads EIO
        master = -1
        exc = await asyncio.wait_for(proto.lost, 10)
        assert isinstance(exc, serial.SerialException)
        assert "read failed" in str(exc) or "returned no data" in str(exc)
    finally:
        if not transport.is_closing():
            transport.abort()
        for fd in (master, slave):
            if fd >= 0:
                os.close(fd)


async def test_a_port_that_cannot_open_raises_as_pyserial_does(tmp_path):
    loop = asyncio.get_running_loop()
    with pytest.raises(serial.SerialException):
        await open_serial(loop, Collect(), str(tmp_path / "no-such-port"), {"baudrate": 9600})
