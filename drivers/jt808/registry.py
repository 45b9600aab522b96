"""The terminals registered on a jt808 listener: phone -> auth code, and when and as what it registered.

A registration is what lets a terminal in: once a phone is in the registry, a 0x0100 for it is
answered "terminal already registered" (0x8100 result 3) and gives no code, until an operator
removes it (`tianwang command <listener> deregister phone=... --reason ...`). Only the `open`
policy lets a phone register again over the air.

With `registrations_file` the registry lives in that file (JSON, mode 0600: it holds auth codes)
and survives restarts. Every change is written whole to `<file>.tmp`, fsynced, renamed over the
file and the directory fsynced, so a crash leaves the old file or the new one, never half of
either. Writes run in a thread, coalesced: a burst of registrations costs a few writes (the SDK's
`StateFile` and `read_state_file` do the file's mechanics). Without a
file the registry is memory only and forgotten at each restart.

A file that is not a registrations file (bad JSON, wrong shape) is a `RegistryError` whose message
is one line naming the file; the config model reads it too, so `tianwang check` and `tianwang run`
refuse it before anything starts. Codes never appear in an error, a log line or `listing()`.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from tianwang.drivers.sdk import StateFile, StateFileError, read_state_file, write_state_file

log = logging.getLogger("tianwang.driver.jt808")

FORMAT = "tianwang.jt808.registrations"
VERSION = 1
_PHONE_RE = re.compile(r"^[0-9]{1,20}$")
INFO_KEYS = ("manufacturer", "model", "terminal_id", "plate", "plate_colour", "province", "city", "edition")


class RegistryError(StateFileError):
    """A registrations file that cannot be used; the message is one line."""


def read_file(path: str) -> dict[str, dict]:
    """phone -> record from `path`; {} when the file does not exist. Raises RegistryError."""
    terminals = read_state_file(path, FORMAT, VERSION, "terminals", label="registrations file", error=RegistryError)
    out = {}
    for phone, rec in terminals.items():
        if not isinstance(phone, str) or not _PHONE_RE.match(phone):
            raise RegistryError(f"registrations file {path}: corrupt: {phone!r} is not a phone number")
        if not isinstance(rec, dict) or not isinstance(rec.get("code"), str) or not rec["code"]:
            raise RegistryError(f"registrations file {path}: corrupt: the entry of {phone} has no code")
        out[phone] = rec
    return out


def write_file(path: str, terminals: dict[str, dict]) -> None:
    """Replace `path` atomically (mode 0600), indented for the operator who reads it."""
    write_state_file(path, FORMAT, VERSION, "terminals", terminals, indent=1)


class Registrations(StateFile):
    """phone -> {"code", "registered_at" (UTC, ISO 8601), "via" ("0x0100" or "0x0102": it
    authenticated with a provisioned or derived code before it was ever registered here),
    "address", and what its 0x0100 said: manufacturer, model, terminal_id, plate...}.

    `path`: the file, or None (memory only); `on_write(error)` is called after each write in the
    background ('' when it succeeded). Loading raises RegistryError."""

    def __init__(self, path: str | None, on_write: Callable[[str], None] | None = None) -> None:
        self.terminals: dict[str, dict[str, Any]] = read_file(path) if path else {}
        # it holds auth codes: a file readable by others is set to 0600 (StateFile)
        super().__init__(
            path,
            snapshot=self._snapshot_terminals,
            write=write_file,
            on_write=on_write,
            log=log,
            label="jt808 registrations",
        )
        self._plates: dict[tuple[Any, Any], str] = {}  # (plate colour, plate) -> phone
        for phone, rec in self.terminals.items():
            self._index(phone, rec)

    # -- reading ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.terminals)

    def __contains__(self, phone: object) -> bool:
        return phone in self.terminals

    def code(self, phone: str) -> str | None:
        rec = self.terminals.get(phone)
        return rec["code"] if rec is not None else None

    def phone_of_plate(self, colour: object, plate: str) -> str | None:
        """The phone a vehicle (plate colour + plate) is registered to, if any."""
        if not plate:
            return None
        return self._plates.get((colour, plate))

    def listing(self) -> list[dict]:
        """Every registration without its code, by phone."""
        return [
            {"phone": phone, **{k: v for k, v in rec.items() if k != "code"}}
            for phone, rec in sorted(self.terminals.items())
        ]

    # -- changing --------------------------------------------------------------------------------
    def _index(self, phone: str, rec: dict[str, Any]) -> None:
        if rec.get("plate"):
            self._plates[(rec.get("plate_colour"), rec["plate"])] = phone

    def unauthenticated(self) -> dict[str, float]:
        """phone -> when (time.time()) it registered, for every registration whose terminal has not
        authenticated yet (`"authenticated": false`; records written before that key existed count
        as authenticated)."""
        out = {}
        for phone, rec in self.terminals.items():
            if rec.get("authenticated") is False:
                out[phone] = _parse_utc(rec.get("registered_at", ""))
        return out

    def authenticated(self, phone: str) -> bool:
        """Mark `phone`'s registration as used by its terminal; True when that changed it."""
        rec = self.terminals.get(phone)
        if rec is None or rec.get("authenticated") is not False:
            return False
        rec["authenticated"] = True
        rec["authenticated_at"] = _utc_now()
        self.save()
        return True

    def add(self, phone: str, code: str, via: str, info: dict, address: str = "", authenticated: bool = True) -> dict:
        old = self.terminals.get(phone)
        if old is not None:
            self._unindex(phone, old)
        rec: dict[str, Any] = {"code": code, "registered_at": _utc_now(), "via": via}
        if not authenticated:
            rec["authenticated"] = False
        if address:
            rec["address"] = address
        for key in INFO_KEYS:
            value = info.get(key)
            if value not in ("", None):
                rec[key] = value
        self.terminals[phone] = rec
        self._index(phone, rec)
        self.save()
        return rec

    def remove(self, phone: str) -> dict | None:
        rec = self.terminals.pop(phone, None)
        if rec is not None:
            self._unindex(phone, rec)
            self.save()
        return rec

    def _unindex(self, phone: str, rec: dict[str, Any]) -> None:
        key = (rec.get("plate_colour"), rec.get("plate"))
        if self._plates.get(key) == phone:
            del self._plates[key]

    # -- writing (StateFile) ---------------------------------------------------------------------
    def _snapshot_terminals(self) -> dict[str, dict]:
        return json.loads(json.dumps(self.terminals))  # a copy the loop may go on changing


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _parse_utc(text: str) -> float:
    """`_utc_now()`'s text as time.time(); 0 (long ago) when it cannot be read."""
    import calendar

    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except (ValueError, TypeError):
        return 0.0
