"""The device end of a pty, as the simulators and `tianwang replay` drive it.

`PtyLine` opens a pty in raw mode, keeps its master non-blocking and plays the device on it: what
the gateway writes to the slave reaches `on_data`, what the device says is written to the master.
While nobody reads the slave, a UART-sized backlog is kept and the rest is lost, as on a real unread
serial port; the loss is reported through `on_overrun`. A `link` is a symlink kept pointing at the
current slave, so a config can name a fixed path across reopened ptys (`point_link`).

Drivers reach it as `tianwang.drivers.sdk.PtyLine`.
"""

from __future__ import annotations

import asyncio
import os
import tty
from collections.abc import Callable

# what a UART's FIFO and a driver's buffers would hold while nobody reads; the rest is lost
BACKLOG_BYTES = 8192


def point_link(link: str, target: str) -> None:
    """Make `link` a symlink to `target` atomically (a temporary link renamed over it), so a reader
    opening `link` never finds it missing. Raises OSError when the link cannot be made."""
    tmp = f"{link}.{os.getpid()}.tmp"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    os.symlink(target, tmp)
    os.replace(tmp, link)


class PtyLine:
    """The device end of one pty.

    `on_data(bytes)` gets what the gateway writes (None: the master is not watched, the owner reads
    `master` itself). `on_overrun(n)` counts bytes lost because the backlog was full; `on_lost(n)`
    counts bytes written while the line is closed or after the pty failed (None: not counted).
    With `keep_slave` (the default) the slave stays open too, so the line stays up while no driver
    has it open; without it, reading the master fails with EIO until a reader opens the slave.
    `open()` may be called again after `close()`: a new pty, and `link` follows it.
    """

    def __init__(
        self,
        on_data: Callable[[bytes], None] | None = None,
        *,
        link: str | None = None,
        keep_slave: bool = True,
        on_overrun: Callable[[int], None] | None = None,
        on_lost: Callable[[int], None] | None = None,
    ):
        self.on_data = on_data
        self.link = link
        self.keep_slave = keep_slave
        self.on_overrun = on_overrun
        self.on_lost = on_lost
        self.master = -1
        self.slave = -1
        self.path = ""
        self.loop: asyncio.AbstractEventLoop | None = None
        self._pending = bytearray()
        self._writing = False

    @property
    def url(self) -> str:
        return f"serial://{self.link or self.path}"

    @property
    def is_open(self) -> bool:
        return self.master >= 0

    def open(self) -> None:
        """Open a new pty (from a running event loop) and point `link` at it. Raises OSError when
        the pty or the link cannot be made (nothing is left open then)."""
        master, slave = os.openpty()
        try:
            tty.setraw(slave)
            os.set_blocking(master, False)
            path = os.ttyname(slave)
            if self.link:
                point_link(self.link, path)
        except OSError:
            os.close(master)
            os.close(slave)
            raise
        if not self.keep_slave:
            os.close(slave)
            slave = -1
        self.master, self.slave, self.path = master, slave, path
        self.loop = asyncio.get_running_loop()
        if self.on_data is not None:
            self.loop.add_reader(master, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            # EIO: no slave end any more; stop watching, or the loop would spin on a dead fd
            self._loop().remove_reader(self.master)
            return
        if data and self.on_data is not None:
            self.on_data(data)

    def write(self, data: bytes) -> None:
        """Write to the slave's reader without blocking; what does not fit waits in the backlog."""
        if self.master < 0:
            self._count(self.on_lost, len(data))
            return
        if self._pending:
            self._queue(data)
            return
        try:
            n = os.write(self.master, data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self._count(self.on_lost, len(data))
            return
        if n < len(data):
            self._queue(data[n:])

    def _queue(self, data: bytes) -> None:
        room = BACKLOG_BYTES - len(self._pending)
        if room <= 0:
            self._count(self.on_overrun, len(data))
            return
        self._pending += data[:room]
        if len(data) > room:
            self._count(self.on_overrun, len(data) - room)
        if not self._writing:
            self._writing = True
            self._loop().add_writer(self.master, self._drain)

    def _drain(self) -> None:
        try:
            n = os.write(self.master, self._pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            n = len(self._pending)
        del self._pending[:n]
        if not self._pending:
            self._writing = False
            self._loop().remove_writer(self.master)

    def _loop(self) -> asyncio.AbstractEventLoop:
        # set by open(): every caller runs on an open pty
        assert self.loop is not None, "the pty is not open"
        return self.loop

    @staticmethod
    def _count(counter: Callable[[int], None] | None, n: int) -> None:
        if counter is not None:
            counter(n)

    def close(self) -> None:
        """Close the pty (its reader sees EIO); the backlog is dropped, `link` is left in place."""
        if self.master < 0:
            return
        if self.on_data is not None:
            self._loop().remove_reader(self.master)
        if self._writing:
            self._loop().remove_writer(self.master)
            self._writing = False
        self._pending.clear()
        os.close(self.master)
        if self.slave >= 0:
            os.close(self.slave)
        self.master = self.slave = -1

    def remove_link(self) -> None:
        """Remove `link` if it is still a symlink (a file put there by someone else is left alone)."""
        if self.link:
            try:
                if os.path.islink(self.link):
                    os.unlink(self.link)
            except OSError:
                pass
