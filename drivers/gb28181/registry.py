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
new one. Writes run in a thread and are coalesced: the first change is written at once, the ones
after it at most once per `min_interval_s` (WRITE_INTERVAL_S, 5 s), and whatever is pending at a
clean stop. Ten thousand devices make a file of about 4 MiB, some 80 ms of CPU to write: a register
storm costs a few writes, not one per REGISTER. A kill -9 loses at most the last interval's changes:
a device registered only in those seconds is unknown after the restart until it registers again
(its keepalives are refused, and a device whose keepalives fail registers again). A file that is not a registrations file is a
`RegistryError` (one line naming the file); the config model reads it too, so `tianwang check`
refuses it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from tianwang.drivers.sdk import StateFile, StateFileError, read_state_file, write_state_file

log = logging.getLogger("tianwang.driver.gb28181")

FORMAT = "tianwang.gb28181.registrations"
WRITE_INTERVAL_S = 5.0  # at most one write per interval after the first: the bound a kill -9 loses
VERSION = 1
KEYS = (
    "address",
    "transport",
    "local",
    "contact",
    "expires_at",
    "registered_at",
    "user_agent",
    "version",
    "manufacturer",
    "model",
    "firmware",
    "name",
    "channels",
)


class RegistryError(StateFileError):
    """A registrations file that cannot be used; the message is one line."""


def read_file(path: str) -> dict[str, dict]:
    """device id -> record from `path`; {} when the file does not exist. Raises RegistryError."""
    devices = read_state_file(
        path,
        FORMAT,
        VERSION,
        "devices",
        label="registrations file",
        kind="GB/T 28181 registrations file",
        error=RegistryError,
    )
    out = {}
    for dev_id, rec in devices.items():
        if (
            not isinstance(rec, dict)
            or not isinstance(rec.get("address"), str)
            or not isinstance(rec.get("expires_at"), (int, float))
        ):
            raise RegistryError(f"registrations file {path}: corrupt: the entry of {dev_id!r} has no address or expiry")
        out[dev_id] = {k: rec[k] for k in KEYS if k in rec}
    return out


def write_file(path: str, devices: dict[str, dict]) -> None:
    """Replace `path` atomically (mode 0600), compact: it may hold ten thousand devices."""
    write_state_file(path, FORMAT, VERSION, "devices", devices)


class Registrations(StateFile):
    """device id -> record (see the module docstring). `path`: the file or None (memory only);
    `on_write(error)` after each background write ('' when it succeeded). Loading raises
    RegistryError."""

    def __init__(
        self,
        path: str | None,
        on_write: Callable[[str], None] | None = None,
        min_interval_s: float = WRITE_INTERVAL_S,
    ) -> None:
        self.devices: dict[str, dict[str, Any]] = read_file(path) if path else {}
        super().__init__(
            path,
            snapshot=self._snapshot_devices,
            write=write_file,
            on_write=on_write,
            min_interval_s=min_interval_s,
            log=log,
            label="gb28181 registrations",
        )

    def __len__(self) -> int:
        return len(self.devices)

    def __contains__(self, dev_id: object) -> bool:
        return dev_id in self.devices

    def get(self, dev_id: str) -> dict[str, Any] | None:
        return self.devices.get(dev_id)

    def put(self, dev_id: str, **fields: Any) -> dict[str, Any]:
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
            self.save()
        return rec

    def remove(self, dev_id: str) -> dict | None:
        rec = self.devices.pop(dev_id, None)
        if rec is not None:
            self.save()
        return rec

    def live(self, now_utc: float | None = None) -> dict[str, dict]:
        """The records whose registration has not run out."""
        now_utc = time.time() if now_utc is None else now_utc
        return {k: v for k, v in self.devices.items() if v.get("expires_at", 0) > now_utc}

    # -- writing (StateFile) ---------------------------------------------------------------------
    def _snapshot_devices(self) -> dict[str, dict]:
        return {k: dict(v) for k, v in self.devices.items()}  # the loop goes on changing the table
