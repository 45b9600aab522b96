"""Sharding one config over several processes (`tianwang run --shard I/N`): which shard owns which
device, and the part of the config a shard runs."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tianwang.gateway.lifecycle.config import Config


def shard_of(device_id: str, count: int) -> int:
    """The shard (0..count-1) that owns `device_id`: CRC-32 of its UTF-8 bytes, modulo `count`.
    Stable across processes, machines and versions, so every shard agrees without talking."""
    import zlib

    return zlib.crc32(device_id.encode("utf-8")) % count


def shard_plan(config: Config, count: int) -> dict[str, int]:
    """device or listener id -> its shard. Devices that share a link (one serial port, one
    connection) go together, to the shard of the smallest id among them; every other entry to the
    shard of its own id (`shard_of`)."""
    from tianwang.gateway.lifecycle.sitecheck import shard_keys

    return {dev_id: shard_of(key, count) for dev_id, key in shard_keys(config).items()}


def for_shard(config: Config, index: int, count: int) -> Config:
    """The part of `config` shard `index` of `count` runs (`tianwang run --shard I/N`): the devices
    and listeners it owns (`shard_plan`: devices sharing a link stay together), under the gateway
    name `<name>-<I>` (so each shard's envelopes are told apart downstream) and, with a durable
    journal, in `<journal.path>/shard-<I>` (one directory per process)."""
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: the index must be 0 to {count - 1}")
    gw = config.gateway
    journal = gw.journal
    if journal.path is not None:
        journal = journal.model_copy(update={"path": os.path.join(journal.path, f"shard-{index}")})
    plan = shard_plan(config, count)
    return config.model_copy(
        update={
            "gateway": gw.model_copy(update={"name": f"{gw.name}-{index}", "journal": journal}),
            "devices": tuple(d for d in config.devices if plan[d.id] == index),
            "listeners": tuple(d for d in config.listeners if plan[d.id] == index),
            # one registration per uplink: the first shard holds it (and sees only its own devices)
            "uplinks": config.uplinks if index == 0 else (),
        }
    )


def parse_shard(text: str) -> tuple[int, int]:
    """'2/5' -> (2, 5). Raises ValueError with the reason."""
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise ValueError(f"{text!r}: expected I/N, e.g. 0/3 for the first of three shards") from None
    if not sep or n < 1 or not 0 <= i < n:
        raise ValueError(f"{text!r}: expected I/N with N >= 1 and 0 <= I < N")
    return i, n
