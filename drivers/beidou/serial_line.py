"""The serial side of a receiver's line: pyserial-asyncio-fast's transport, reading with one `read`.

pyserial's `Serial.read` on a non-blocking port runs a `select` on the descriptor the loop has just
said is readable, builds a timeout object and a bytearray, then calls `read`: about 5 us per chunk
where `os.read` takes one, on the path of every reading from a pty or a serial port. The transport
here reads the descriptor itself and keeps pyserial's outcomes: nothing ready is not an error, a
hang-up (EIO) or a readable port that gives no bytes closes the line with a SerialException.
Ports that are not plain POSIX ports (pyserial URL handlers) keep the library's transport.
"""

from __future__ import annotations

import asyncio
import errno
import os
from functools import partial
from typing import Any

import serial
import serial_asyncio_fast

# what pyserial's read treats as "nothing to read now" rather than a failure
_RETRY = (errno.EAGAIN, errno.EALREADY, errno.EWOULDBLOCK, errno.EINPROGRESS, errno.EINTR)


class FastReadTransport(serial_asyncio_fast.SerialTransport):
    """SerialTransport whose reads go straight to the port's descriptor."""

    def _read_ready(self) -> None:
        port = self._serial
        if port is None or port.fd is None:  # closed meanwhile
            return
        try:
            data = os.read(port.fd, self._max_read_size)
        except OSError as exc:
            if exc.errno in _RETRY:
                return
            self._close(exc=serial.SerialException(f"read failed: {exc}"))
            return
        if data:
            self._protocol.data_received(data)
        else:
            # pyserial's words for the same case (a pty whose other side closed, a USB adapter gone)
            self._close(
                exc=serial.SerialException(
                    "device reports readiness to read but returned no data "
                    "(device disconnected or multiple access on port?)"
                )
            )


async def open_serial(
    loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol, where: str, options: dict[str, Any]
) -> asyncio.BaseTransport:
    """Open the port in an executor thread (never on the loop) and attach `protocol` to it.
    Raises serial.SerialException (an OSError) or ValueError as pyserial does."""
    port = await loop.run_in_executor(None, partial(serial.serial_for_url, where, **options))
    if type(port) is serial.Serial:
        return FastReadTransport(loop, protocol, port)
    transport, _ = await serial_asyncio_fast.connection_for_serial(loop, lambda: protocol, port)
    return transport
