"""The devices registered on a gb28181 listener, persisted so a restart does not forget them.

A registration is what a device's last successful REGISTER said: where it came from (address and
transport: later requests go there), which of the gateway's addresses it reached (`local`: the Via
of those requests), its Contact, when the registration runs out (UTC seconds), its
User-Agent and GB version, and what the device told about itself since (manufacturer, model,
firmware, channel count). After a restart the listener reads them back: a device whose registration
has not run out is known at once (its keepalives are taken, commands reach it at its last address)
instead of being refused until its next REGISTER, which may be an hour away.

With `registrations_file` the table lives in that file (JSON, mode 0600, as the JT/T 808 one: it
says where every camera of a city is reachable). Every change is written whole to `<file>.tmp`,
fsynced, renamed over the file, and the directory fsynced, so a crash leaves the old file or the
new one. Writes run in a thread and are coalesced, at most one per `min_interval_s`: a register
storm of ten thousand devices costs a few writes. A file that is not a registrations file is a
`RegistryError` (one line naming the file); the config model reads it too, so `tianwang check`
refuses it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time

log = logging.getLogger("tianwang.driver.gb28181")

FORMAT = "tianwang.gb28181.registrations"
VERSION = 1
KEYS = (
    "address", "transport", "local", "contact", "expires_at", "registered_at", "user_agent", "version",
    "manufacturer", "model", "firmware", "name", "channels",
)


class RegistryError(ValueError):
    """A registrations file that cannot be used; the message is one line."""


def read_file(path: str) -> dict[str, dict]:
    """device id -> record from `path`; {} when the file does not exist. Raises RegistryError."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return {}
    except IsADirectoryError:
        raise RegistryError(f"registrations file {path}: is a directory") from None
    except OSError as exc:
        raise RegistryError(f"registrations file {path}: cannot read: {exc.strerror}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise RegistryError(f"registrations file {path}: corrupt: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise RegistryError(
            f"registrations file {path}: corrupt: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RegistryError(f"registrations file {path}: not a GB/T 28181 registrations file (no \"format\": \"{FORMAT}\")")
    if data.get("version") != VERSION:
        raise RegistryError(f"registrations file {path}: version {data.get('version')!r} is not {VERSION}")
    devices = data.get("devices")
    if not isinstance(devices, dict):
        raise RegistryError(f"registrations file {path}: corrupt: \"devices\" is not a map")
    out = {}
    for dev_id, rec in devices.items():
        if not isinstance(rec, dict) or not isinstance(rec.get("address"), str) or not isinstance(
            rec.get("expires_at"), (int, float)
        ):
            raise RegistryError(f"registrations file {path}: corrupt: the entry of {dev_id!r} has no address or expiry")
        out[dev_id] = {k: rec[k] for k in KEYS if k in rec}
    return out


def write_file(path: str, devices: dict[str, dict]) -> None:
    """Replace `path` atomically: tmp (mode 0600) + fsync + rename + fsync of the directory."""
    data = json.dumps(
        {"format": FORMAT, "version": VERSION, "devices": devices}, ensure_ascii=False, separators=(",", ":"),
        sort_keys=True,
    ).encode("utf-8")
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


class Registrations:
    """device id -> record (see the module docstring). `path`: the file or None (memory only);
    `on_write(error)` after each background write ('' when it succeeded). Loading raises
    RegistryError."""

    def __init__(self, path: str | None, on_write=None, min_interval_s: float = 1.0):
        self.path = path
        self.on_write = on_write
        self.min_interval_s = min_interval_s
        self.devices: dict[str, dict] = read_file(path) if path else {}
        if path and os.path.exists(path) and os.stat(path).st_mode & 0o077:
            log.warning("gb28181 registrations: %s was readable by others; mode set to 0600", path)
            os.chmod(path, 0o600)
        self._generation = 0
        self._written = 0
        self._writer: asyncio.Task | None = None
        self._event: asyncio.Event | None = None
        self.writes = 0
        self.write_errors = 0
        self.last_error = ""

    def __len__(self):
        return len(self.devices)

    def __contains__(self, dev_id):
        return dev_id in self.devices

    def get(self, dev_id: str) -> dict | None:
        return self.devices.get(dev_id)

    def put(self, dev_id: str, **fields) -> dict:
        """Set (or update) a device's record with `fields` (keys of KEYS; None values removed)."""
        rec = self.devices.setdefault(dev_id, {})
        changed = False
        for k, v in fields.items():
            if k not in KEYS:
                raise KeyError(k)
            if v is None:
                changed |= rec.pop(k, None) is not None
            elif rec.get(k) != v:
                rec[k] = v
                changed = True
        if changed:
            self._changed()
        return rec

    def remove(self, dev_id: str) -> dict | None:
        rec = self.devices.pop(dev_id, None)
        if rec is not None:
            self._changed()
        return rec

    def live(self, now_utc: float | None = None) -> dict[str, dict]:
        """The records whose registration has not run out."""
        now_utc = time.time() if now_utc is None else now_utc
        return {k: v for k, v in self.devices.items() if v.get("expires_at", 0) > now_utc}

    # -- writing ---------------------------------------------------------------------------------
    def _changed(self):
        self._generation += 1
        if self.path is None:
            self._written = self._generation
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a test, a tool): write now
            write_file(self.path, self.devices)
            self._written = self._generation
            return
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_loop())

    async def _write_loop(self):
        while self._written < self._generation:
            gen = self._generation
            snapshot = {k: dict(v) for k, v in self.devices.items()}  # the loop goes on changing the table
            try:
                await asyncio.to_thread(write_file, self.path, snapshot)
            except OSError as exc:
                self.write_errors += 1
                self.last_error = f"cannot write {self.path}: {exc.strerror or exc}"
                log.error("gb28181 registrations: %s", self.last_error)
                self._wake()
                if self.on_write is not None:
                    self.on_write(self.last_error)
                return
            self.writes += 1
            self._written = gen
            self.last_error = ""
            self._wake()
            if self.on_write is not None:
                self.on_write("")
            if self._written < self._generation and self.min_interval_s > 0:
                # a storm of registrations: let more of them gather before the next write
                await asyncio.sleep(self.min_interval_s)

    def _wake(self):
        if self._event is not None:
            self._event.set()
            self._event = None

    async def flush(self) -> None:
        """Return once every change so far is on disk. Raises OSError when it cannot be written."""
        target = self._generation
        while self._written < target:
            if self._writer is None or self._writer.done():
                self._writer = asyncio.get_running_loop().create_task(self._write_loop())
            if self._event is None:
                self._event = asyncio.Event()
            event = self._event
            await event.wait()
            if self._written < target and self.last_error:
                raise OSError(self.last_error)

    @property
    def pending(self) -> bool:
        return self._written < self._generation
