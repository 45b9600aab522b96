"""What the CLI prints beside its tables: the counters that diagnose a link (`tianwang devices`),
the shard plan with its link groups (`check --shards`), and the bytes of a command's result
(`command --out`)."""

from __future__ import annotations

import os
import sys

# counters that diagnose a link, first in the table's COUNTERS column (then dropped_<reason>)
DIAGNOSTIC_COUNTERS = ("reconnects", "link_drops", "failed_attempts", "auth_failures")
MAX_TABLE_COUNTERS = 4


def format_counters(counters) -> str:
    """The counters that say what is wrong with a link, compactly: `reconnects=3
    dropped_bad_checksum=120`; non-zero ones only, at most MAX_TABLE_COUNTERS (`+N` more; `--json`
    has them all); `-` when there are none."""
    shown = [k for k in DIAGNOSTIC_COUNTERS if counters.get(k)]
    drops = sorted((k for k, v in counters.items() if k.startswith("dropped_") and v), key=lambda k: -counters[k])
    rest = sorted(k for k, v in counters.items() if v and k != "envelopes" and k not in shown and k not in drops)
    keys = shown + drops + rest
    text = " ".join(f"{k}={counters[k]}" for k in keys[:MAX_TABLE_COUNTERS])
    if len(keys) > MAX_TABLE_COUNTERS:
        text += f" +{len(keys) - MAX_TABLE_COUNTERS}"
    return text or "-"


def print_shards(config, count: int) -> None:
    """`check --shards N`: the shard of every device and listener, and the groups of devices that
    share a link (they always go to one shard)."""
    from tianwang.gateway.lifecycle.config import shard_plan
    from tianwang.gateway.lifecycle.sitecheck import link_groups

    plan = shard_plan(config, count)
    groups = link_groups(config.devices)
    link_of = {d.id: link for link, members in groups.items() for d in members}
    rows = [(d.id, "listener" if d in config.listeners else "device", plan[d.id]) for d in config.all_devices()]
    width = max([len("ID")] + [len(r[0]) for r in rows])
    print(f"{'ID':<{width}}  KIND      SHARD  LINK")
    for dev_id, kind, shard in sorted(rows, key=lambda r: (r[2], r[0])):
        print(f"{dev_id:<{width}}  {kind:<8}  {shard:<5}  {link_of.get(dev_id, '-')}".rstrip())
    counts = [sum(1 for r in rows if r[2] == i) for i in range(count)]
    print(
        f"per shard of {count} (run each with --shard I/{count}): "
        + ", ".join(f"{i}: {c}" for i, c in enumerate(counts))
    )
    for link, members in groups.items():
        ids = sorted(d.id for d in members)
        print(f"shared link {link}: {', '.join(ids)} -> shard {plan[ids[0]]} (a link is never split)")


def save_result_bytes(result, path: str):
    """`command --out FILE`: the result's bytes values go to FILE (several: FILE.<key> each), and the
    result names where each went: `{"jpeg": {"file": "snap.jpg", "bytes": 48213}}`. Each file is
    written whole (a temporary file renamed over it). Raises OSError."""
    if not isinstance(result, dict):
        return result
    keys = [k for k, v in result.items() if isinstance(v, (bytes, bytearray))]
    out = dict(result)
    for key in keys:
        target = path if len(keys) == 1 else f"{path}.{key}"
        tmp = f"{target}.part"
        with open(tmp, "wb") as f:
            f.write(result[key])
        os.replace(tmp, target)
        out[key] = {"file": target, "bytes": len(result[key])}
        print(f"tianwang command: wrote {len(result[key])} bytes ({key}) to {target}", file=sys.stderr)
    if not keys:
        print(f"tianwang command: the result carries no bytes; nothing written to {path}", file=sys.stderr)
    return out
