"""20-digit GB/T 28181 IDs of the devices an uplink exposes.

The rule (docs/gb28181-uplink.md): a device keeps an ID it already has (a GB/T 28181 channel's
DeviceID, or the `gb_id` key of its config entry); any other device gets

    <first 10 digits of the uplink's local_id> <type> <digit 14 of local_id> <serial>

with type 132 (IPC) for the `camera` family and 138 (mobile unit) for `gnss`, and serial the
6-digit remainder of a SHA-256 of `family/device_id` by 10**6: stable across restarts and machines.
Families other than camera and gnss are not put in the catalog unless they carry a `gb_id`.
`tianwang check` refuses two configured devices with one ID (set `gb_id` on one of them).
"""

from __future__ import annotations

import functools
import hashlib
import re

from tianwang.gateway.framing import TopicFilter

TYPE_BY_FAMILY = {"camera": "132", "gnss": "138"}
_GB = re.compile(r"^[0-9]{20}$")


def rule_id(local_id: str, family: str, device_id: str) -> str | None:
    """The rule's ID for a device without one of its own; None for a family the rule does not cover."""
    type_code = TYPE_BY_FAMILY.get(family)
    if type_code is None:
        return None
    digest = hashlib.sha256(f"{family}/{device_id}".encode()).digest()
    serial = int.from_bytes(digest[:8], "big") % 1_000_000
    return f"{local_id[:10]}{type_code}{local_id[13]}{serial:06d}"


def gb_id_for(local_id: str, family: str, device_id: str, configured: str | None = None) -> str | None:
    """The ID the superior knows the device by (None: not expressible, so not exposed)."""
    if configured:
        return configured
    if _GB.match(device_id):
        return device_id
    return rule_id(local_id, family, device_id)


@functools.lru_cache(maxsize=64)
def _filter(patterns: tuple) -> TopicFilter | None:
    return TopicFilter(list(patterns)) if patterns else None


def exposes(patterns, family: str, device_id: str) -> bool:
    """True when `family/device_id` matches one of `patterns` (an uplink's expose or control)."""
    flt = _filter(tuple(patterns))
    return flt is not None and flt.matches(f"{family}/{device_id}")


def collisions(entries, uplinks) -> list[tuple[str, str]]:
    """(path, reason) for every configured device whose ID towards an uplink is another's, or the
    uplink's own. `entries` are (path, family, config) of the configured devices and listeners."""
    problems = []
    for u in uplinks:
        taken: dict[str, str] = {u.local_id: "the uplink's own local_id", u.superior_id: "the superior's ID"}
        for path, family, dev in entries:
            if not exposes(u.expose, family, dev.id) and not dev.gb_id:
                continue
            gid = gb_id_for(u.local_id, family, dev.id, dev.gb_id)
            if gid is None:
                continue
            key = f"{path}.gb_id" if dev.gb_id else f"{path}.id"
            if gid in taken:
                problems.append(
                    (
                        key,
                        f"GB/T 28181 ID {gid} towards uplink {u.id!r} is also {taken[gid]}: "
                        "give one of them a `gb_id` of its own",
                    )
                )
            else:
                taken[gid] = path
    return problems
