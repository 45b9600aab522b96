"""What `run` will do with a config, checked before it runs: the paths it opens, the links devices
share, the addresses it binds, and which devices must stay together when it is sharded.

`load_config` calls `site_problems` after every entry has been validated on its own, so `tianwang
check` and a SIGHUP reload refuse what `run` could not run: a file the gateway writes in a
directory that does not exist, two controllers with one `controller_id` on one serial line, a
camera's webhook on the metrics port. Drivers describe what they need through three methods of
their config model (tianwang.gateway.lifecycle.config.DeviceConfig):

- `config_paths()`: `(key, path, need)` for the files it opens, `need` one of "read" (an existing
  file), "write" (a file it creates or replaces: its directory must exist and be writable) and
  "dir" (a directory it creates when missing);
- `config_binds()`: `(key, HOST:PORT, share)` for the addresses it listens on; entries with the
  same non-empty `share` tag may name one address (cameras sharing one webhook server);
- `link_id()`: what identifies the line or connection it opens (`serial:/dev/ttyS1`,
  `tcp:10.1.2.3:5000`), or None. Devices with the same link id share one link: they must all be
  of a driver whose config has a `shared_link_problems(entries)` classmethod (signal), which says
  what keeps them from sharing it, and they always land in one shard (`link_groups`).
"""

from __future__ import annotations

import difflib
import os
import re
import typing

from pydantic import BaseModel

# a host that binds every address of its family
_WILDCARDS = {"0.0.0.0": "ipv4", "": "ipv4", "::": "ipv6"}


def did_you_mean(word: str, known) -> str:
    """` (did you mean 'x'?)` for the closest of `known`, or ''."""
    close = difflib.get_close_matches(str(word), sorted(set(known)), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def known_keys(model: type[BaseModel] | None, loc) -> list[str]:
    """The keys the mapping at `loc[:-1]` inside `model` accepts (for an unknown key at `loc`)."""
    m = model
    for part in list(loc)[:-1]:
        if isinstance(part, int):
            continue
        field = m.model_fields.get(part) if m is not None else None
        if field is None:
            return []
        m = _model_in(field.annotation)
    return list(m.model_fields) if m is not None else []


def _model_in(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def entry_names(data: dict) -> dict[str, str]:
    """{"devices[3]": "tsc-0017", ...}: the id of every raw entry that has one."""
    out = {}
    for section in ("devices", "listeners"):
        raw = data.get(section) if isinstance(data, dict) else None
        for i, entry in enumerate(raw if isinstance(raw, list) else ()):
            dev_id = entry.get("id") if isinstance(entry, dict) else None
            if isinstance(dev_id, str) and dev_id:
                out[f"{section}[{i}]"] = dev_id
    return out


# ---------------------------------------------------------------------------------------------
# paths


def path_problem(path: str, need: str) -> str | None:
    """Why the gateway could not use `path` as `need` ("read", "write", "dir"; "file": only that it
    is not a directory, for keys whose validators check that they can be read), or None."""
    path = os.path.expanduser(path)
    if need in ("read", "file"):
        if os.path.isdir(path):
            return f"{path} is a directory, not a file"
        if need == "file":
            return None  # whether it can be read: the key's own validator says so
        if not os.path.exists(path):
            return f"{path} does not exist"
        if not os.access(path, os.R_OK):
            return f"cannot read {path}"
        return None
    if need == "write":
        if os.path.isdir(path):
            return f"{path} is a directory; name a file in it"
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.exists(parent):
            return f"its directory {parent} does not exist (create it, writable by the gateway's user)"
        if not os.path.isdir(parent):
            return f"{parent} is not a directory"
        if not os.access(parent, os.W_OK | os.X_OK):
            return f"cannot create files in {parent} (not writable by this user)"
        if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
            return f"cannot read and write {path}"
        return None
    if need == "dir":
        if os.path.exists(path):
            if not os.path.isdir(path):
                return f"{path} exists and is not a directory"
            if not os.access(path, os.W_OK | os.X_OK):
                return f"cannot write in {path}"
            return None
        ancestor = os.path.dirname(os.path.abspath(path))
        while not os.path.exists(ancestor):
            ancestor = os.path.dirname(ancestor)
        if not os.path.isdir(ancestor):
            return f"cannot create {path}: {ancestor} is not a directory"
        if not os.access(ancestor, os.W_OK | os.X_OK):
            return f"cannot create {path}: {ancestor} is not writable by this user"
        return None
    raise ValueError(f"unknown need {need!r}")


def _gateway_paths(data: dict) -> list[tuple[str, str, str]]:
    """(config path, file, need) of the files the gateway section and the bridge name."""

    def mapping(value):
        return value if isinstance(value, dict) else {}

    out = []
    gw = mapping(data.get("gateway"))
    journal = mapping(gw.get("journal")).get("path")
    if isinstance(journal, str) and journal.strip():
        out.append(("gateway.journal.path", journal, "dir"))
    for key in ("cert_file", "key_file", "client_ca_file"):
        value = mapping(gw.get("tls")).get(key)
        if isinstance(value, str):
            out.append((f"gateway.tls.{key}", value, "file"))
    nats = mapping(mapping(data.get("bridges")).get("nats"))
    for key in ("creds_file", "tls_ca_file"):
        if isinstance(nats.get(key), str):
            out.append((f"bridges.nats.{key}", nats[key], "file"))
    return out


# ---------------------------------------------------------------------------------------------
# links and addresses


def _link_of(dev) -> str | None:
    link_id = getattr(dev, "link_id", None)
    return link_id() if callable(link_id) else None


def _share_problems(entries) -> list[tuple[int, str, str]]:
    """(index into `entries`, key, why) for devices that cannot share the link they name.
    `entries`: [(path, config)] of one link, in file order."""
    first_path, first = entries[0]
    drivers = {dev.driver for _, dev in entries}
    hook = getattr(type(first), "shared_link_problems", None)
    if len(drivers) > 1 or hook is None:
        out = []
        link = _link_of(first)
        for n, _ in enumerate(entries[1:], 1):
            out.append(
                (
                    n,
                    "url",
                    (
                        f"{link} is already {first.id!r}'s ({first_path}, driver {first.driver}): only devices of one "
                        "driver that shares its links (signal controllers on one line) may use one serial port or "
                        "connection"
                    ),
                )
            )
        return out
    return hook([dev for _, dev in entries])


def link_groups(devices) -> dict[str, list]:
    """{link id: [device configs]} of the links two or more devices share, in file order."""
    by_link: dict[str, list] = {}
    for dev in devices:
        link = _link_of(dev) if dev.enabled else None
        if link is not None:
            by_link.setdefault(link, []).append(dev)
    return {k: v for k, v in by_link.items() if len(v) > 1}


def shard_keys(config) -> dict[str, str]:
    """device id -> the id its shard is chosen by: its own, or for devices sharing a link the
    smallest id among them, so a link is never split between shards."""
    keys = {d.id: d.id for d in config.all_devices()}
    for group in link_groups(config.devices).values():
        owner = min(d.id for d in group)
        for d in group:
            keys[d.id] = owner
    return keys


def _norm_host(host: str) -> str:
    return "127.0.0.1" if host == "localhost" else host.strip("[]").lower()


def _clash(a: tuple[str, int], b: tuple[str, int]) -> bool:
    (ha, pa), (hb, pb) = a, b
    if pa != pb:
        return False
    if ha == hb:
        return True
    fa, fb = _WILDCARDS.get(ha), _WILDCARDS.get(hb)
    family_a = "ipv6" if ":" in ha else "ipv4"
    family_b = "ipv6" if ":" in hb else "ipv4"
    # a wildcard takes the port on every address of its family (and "::" on IPv4 too, dual stack)
    return (fa is not None and (fa == family_b or fa == "ipv6")) or (
        fb is not None and (fb == family_a or fb == "ipv6")
    )


def _binds(data: dict, devices, listeners) -> list[tuple[str, str, str]]:
    """(config path, HOST:PORT, share tag) of every address the config binds, in file order."""
    out = []
    gw = g if isinstance(g := data.get("gateway"), dict) else {}
    for key, default in (("listen", "127.0.0.1:50051"), ("metrics", "127.0.0.1:9108")):
        addr = gw.get(key, default)
        if isinstance(addr, str):
            out.append((f"gateway.{key}", addr, ""))
    raw_listeners = r if isinstance(r := data.get("listeners"), list) else []
    valid = {i for i, _ in listeners}
    for i, entry in enumerate(raw_listeners):
        # raw, so a listener that is invalid for another reason still claims its address
        if (
            i not in valid
            and isinstance(entry, dict)
            and isinstance(entry.get("listen"), str)
            and entry.get("enabled", True) is not False
        ):
            out.append((f"listeners[{i}].listen", entry["listen"], ""))
    for section, entries in (("devices", devices), ("listeners", listeners)):
        for i, dev in entries:
            for key, addr, share in dev.config_binds():
                out.append((f"{section}[{i}].{key}", addr, share))
    return out


def site_problems(data: dict, devices, listeners) -> list[tuple[str, str]]:
    """Problems `run` would meet with this config although every entry is valid on its own.
    `devices`, `listeners`: [(index, config)] of the entries that validated. Entries with
    `enabled: false` are not run, so they open, share and bind nothing."""
    from tianwang.gateway.lifecycle.config import parse_hostport

    devices = [(i, d) for i, d in devices if d.enabled]
    listeners = [(i, d) for i, d in listeners if d.enabled]

    problems: list[tuple[str, str]] = []
    for path, value, need in _gateway_paths(data):
        why = path_problem(value, need)
        if why:
            problems.append((path, why))
    for section, entries in (("devices", devices), ("listeners", listeners)):
        for i, dev in entries:
            for key, value, need in dev.config_paths():
                why = path_problem(value, need)
                if why:
                    problems.append((f"{section}[{i}].{key}", why))

    by_link: dict[str, list] = {}
    for i, dev in devices:
        link = _link_of(dev)
        if link is not None:
            by_link.setdefault(link, []).append((f"devices[{i}]", dev))
    for entries in by_link.values():
        if len(entries) > 1:
            for n, key, why in _share_problems(entries):
                problems.append((f"{entries[n][0]}.{key}", why))

    claimed: list[tuple[tuple[str, int], str, str, str]] = []
    for path, addr, share in _binds(data, devices, listeners):
        try:
            host, port = parse_hostport(addr)
        except ValueError:
            continue  # reported where the address is validated
        if not port:
            continue  # port 0: the system picks a free one
        where = (_norm_host(host), port)
        for other_where, other_path, other_addr, other_share in claimed:
            if not _clash(where, other_where):
                continue
            if share and share == other_share and addr == other_addr:
                continue
            entry = re.match(r"^(?:devices|listeners)\[\d+\]", other_path)
            owner = entry.group(0) if entry else other_path
            problems.append((path, f"{addr} is also {owner}'s address: each needs a port of its own"))
            break
        else:
            claimed.append((where, path, addr, share))
    return problems
