"""A table a driver keeps in a file of its own so that a restart does not forget it (the devices
registered on a listener, for instance).

The file is one JSON document: `{"format": NAME, "version": N, KEY: {id: record}}`. Reading it
refuses, in one line naming the file, anything that is not such a document (a directory, bad UTF-8,
bad JSON, another format or version, a KEY that is not a map), so a config check can refuse a
corrupt file before anything starts. Every change is written whole to `<file>.tmp` (mode 0600: such
tables say who may connect and where every device is reachable), fsynced, renamed over the file,
and the directory fsynced: a crash leaves the old file or the new one, never half of either.

`StateFile` is the base of a table kept that way: it writes in a thread, coalesced (a burst of
changes costs a few writes, at most one per `min_interval_s`), reports each write to `on_write`,
and `flush()` writes what is pending without waiting out the interval and returns once every
change so far is on disk.

Drivers reach these as `tianwang.drivers.sdk.StateFile`, `StateFileError`, `read_state_file` and
`write_state_file`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from typing import Any


class StateFileError(ValueError):
    """A state file that cannot be used; the message is one line naming the file."""


def read_state_file(
    path: str,
    fmt: str,
    version: int,
    key: str,
    *,
    label: str = "state file",
    kind: str | None = None,
    error: type[StateFileError] = StateFileError,
) -> dict:
    """The map under `key` in `path`; {} when the file does not exist. Raises `error` (a
    StateFileError), whose message starts with "`label` `path`: "; a document of another format is
    "not a `kind`" (`kind` defaults to `label`). The records themselves are the caller's to check."""
    where = f"{label} {path}"
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return {}
    except IsADirectoryError:
        raise error(f"{where}: is a directory") from None
    except OSError as exc:
        raise error(f"{where}: cannot read: {exc.strerror}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise error(f"{where}: corrupt: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise error(f"{where}: corrupt: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise error(f'{where}: not a {kind or label} (no "format": "{fmt}")')
    if data.get("version") != version:
        raise error(f"{where}: version {data.get('version')!r} is not {version}")
    table = data.get(key)
    if not isinstance(table, dict):
        raise error(f'{where}: corrupt: "{key}" is not a map')
    return table


def write_state_file(path: str, fmt: str, version: int, key: str, table: dict, indent: int | None = None) -> None:
    """Replace `path` atomically with the document of `table` (keys sorted; compact unless
    `indent`, for a file people read). Raises OSError."""
    doc = {"format": fmt, "version": version, key: table}
    if indent:
        text = json.dumps(doc, ensure_ascii=False, indent=indent, sort_keys=True)
    else:
        text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    write_private_file(path, text.encode("utf-8"))


def write_private_file(path: str, data: bytes) -> None:
    """Replace `path` atomically: tmp (mode 0600) + fsync + rename + fsync of the directory."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a leftover tmp with looser bits is tightened too
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class StateFile:
    """The writing half of a table kept in `path` (None: memory only, nothing written).

    A subclass holds the table, calls `save()` after each change, and passes `snapshot` (a copy
    of the table the loop may go on changing while a thread writes it) and `write(path, snapshot)`
    (which raises OSError). Changes made with a running loop are written by one background task, the
    ones gathered meanwhile together: the first change at once, then at most one write per
    `min_interval_s` however the changes come (a burst or a trickle); without a loop (a
    tool, a test) a change is written at once. `on_write(error)` is called after each background
    write ('' when it succeeded); a failed write is counted (`write_errors`, `last_error`) and logged
    on `log` as "`label`: cannot write ...", and the next change tries again.

    A file found readable by group or others is set to mode 0600, with a warning."""

    def __init__(
        self,
        path: str | None,
        *,
        snapshot: Callable[[], Any],
        write: Callable[[str, Any], None],
        on_write: Callable[[str], None] | None = None,
        min_interval_s: float = 0.0,
        log: logging.Logger,
        label: str,
    ):
        self.path = path
        self.on_write = on_write
        self.min_interval_s = min_interval_s
        self._snapshot = snapshot
        self._write = write
        self._log = log
        self._label = label
        if path and os.path.exists(path) and os.stat(path).st_mode & 0o077:
            # what such a table holds is for the gateway's user alone
            log.warning("%s: %s was readable by others; mode set to 0600", label, path)
            os.chmod(path, 0o600)
        self._generation = 0  # changes made
        self._written = 0  # changes on disk
        self._writer: asyncio.Task | None = None
        self._written_event: asyncio.Event | None = None
        self._hurry: asyncio.Event | None = None  # set by flush(): write now, not after the interval
        self._last_write_at = float("-inf")  # loop time of the last write's end
        self._flush_to = 0  # a flush waits for the changes up to this one: written without waiting
        self.writes = 0
        self.write_errors = 0
        self.last_error = ""

    def save(self) -> None:
        """Write the table: at once without a running loop, else soon, in the background."""
        self._generation += 1
        if self.path is None:
            self._written = self._generation
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a tool, a test): write now
            gen = self._generation
            self._write(self.path, self._snapshot())
            self._written = gen
            return
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_loop())

    async def _write_loop(self) -> None:
        assert self.path is not None  # _changed() starts it only when there is a file
        loop = asyncio.get_running_loop()
        while self._written < self._generation:
            wait = self._last_write_at + self.min_interval_s - loop.time()
            if wait > 0 and self._flush_to <= self._written:
                # written less than an interval ago: let more changes gather (a flush, at a clean
                # stop, cuts the wait short); a trickle of changes costs one write per interval too
                hurry = self._hurry = asyncio.Event()
                try:
                    await asyncio.wait_for(hurry.wait(), wait)
                except TimeoutError:
                    pass
                finally:
                    self._hurry = None
            gen = self._generation
            snapshot = self._snapshot()
            try:
                await asyncio.to_thread(self._write, self.path, snapshot)
            except OSError as exc:
                self.write_errors += 1
                self.last_error = f"cannot write {self.path}: {exc.strerror or exc}"
                self._log.error("%s: %s", self._label, self.last_error)
                self._wake()
                if self.on_write is not None:
                    self.on_write(self.last_error)
                return
            finally:
                self._last_write_at = loop.time()
            self.writes += 1
            self._written = gen
            self.last_error = ""
            self._wake()
            if self.on_write is not None:
                self.on_write("")

    def _wake(self) -> None:
        if self._written_event is not None:
            self._written_event.set()
            self._written_event = None

    async def flush(self) -> None:
        """Return once every change made so far is on disk. Raises OSError when it cannot be written."""
        target = self._generation
        self._flush_to = max(self._flush_to, target)
        if self._hurry is not None and self._written < target:
            self._hurry.set()
        while self._written < target:
            if self._writer is None or self._writer.done():
                self._writer = asyncio.get_running_loop().create_task(self._write_loop())
            if self._written_event is None:
                self._written_event = asyncio.Event()
            event = self._written_event
            await event.wait()
            if self._written < target and self.last_error:
                raise OSError(self.last_error)

    @property
    def pending(self) -> bool:
        """Changes not on disk yet."""
        return self._written < self._generation
