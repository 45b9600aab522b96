"""GB/T 28181 catalogs: collecting split responses, one device's channel tree, and splitting a
catalog into bodies to send. Sans-io: items and times in, results out.

A catalog answer arrives as several MESSAGEs with the same SN; `SumNum` is the total and there is no
"last" marker, so `CatalogCollector` gathers chunks per (device, SN) in any order, de-duplicated by
DeviceID, and finishes when the unique items reach SumNum, or on an idle timeout with the partial
result (`complete=False`). Memory is bounded: items per collection and collections at once.

`Catalog` keeps one device's items: channels (cameras, alarm inputs and other leaf devices) apart
from tree nodes (regions, systems, business groups, virtual organisations), replaced by a fresh
catalog answer and changed by catalog NOTIFY events (ON, OFF, VLOST, DEFECT, ADD, DEL, UPDATE).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tianwang.drivers.gb28181 import manscdp
from tianwang.drivers.gb28181.manscdp import CatalogItem

NODE_KINDS = frozenset({"region", "system", "business_group", "virtual_org"})
EVENTS = ("ON", "OFF", "VLOST", "DEFECT", "ADD", "DEL", "UPDATE")


@dataclass(slots=True)
class CatalogResult:
    device_id: str
    sn: int
    sum_num: int
    items: list  # unique by device_id, in arrival order
    complete: bool  # False: finished by the idle timeout, eviction or the item bound
    dropped: int = 0  # items left out by the per-device bound (at least this many)


@dataclass(slots=True)
class _Pending:
    device_id: str
    sn: int
    sum_num: int
    items: dict  # device_id -> item
    last: float
    dropped: int = 0


class CatalogCollector:
    """Gathers split catalog answers. `add` returns the finished result when the unique items reach
    SumNum, or at once (partial) when a device sends more than `max_items_per_device`; `expire`
    returns the collections idle for `idle_s` as partial results, and any evicted because more than
    `max_pending` were open at once. Chunks of an answer that already finished (a UDP retransmission,
    a repeated last chunk) are ignored for `idle_s` afterwards instead of opening a new collection."""

    def __init__(self, idle_s: float = 10.0, max_items_per_device: int = 10_000, max_pending: int = 20_000) -> None:
        self.idle_s = idle_s
        self.max_items = max_items_per_device
        self.max_pending = max_pending
        self._pending: collections.OrderedDict[tuple[str, int], _Pending] = collections.OrderedDict()
        self._done: collections.OrderedDict[tuple[str, int], float] = collections.OrderedDict()
        self._evicted: list[CatalogResult] = []

    def __len__(self) -> int:
        return len(self._pending)

    def add(
        self, device_id: str, sn: int, sum_num: int, items: Iterable[CatalogItem], now: float
    ) -> CatalogResult | None:
        """One chunk: (SumNum, items) as `manscdp.catalog_items` read them. Items need `.device_id`."""
        key = (device_id, sn)
        done = self._done.get(key)
        if done is not None:
            if now - done < self.idle_s:
                return None
            del self._done[key]
        p = self._pending.get(key)
        if p is None:
            p = _Pending(device_id, sn, max(0, sum_num), {}, now)
            self._pending[key] = p
            if len(self._pending) > self.max_pending:
                old_key, old = self._pending.popitem(last=False)
                self._evicted.append(self._result(old, False))
                self._finished(old_key, now)
        else:
            self._pending.move_to_end(key)
            p.last = now
            # a device that miscounts: trust the largest total it announced
            p.sum_num = max(p.sum_num, sum_num)
        for item in items:
            did = item.device_id
            if did in p.items:
                p.items[did] = item  # a repeated chunk or a corrected item: the later one wins
            elif len(p.items) < self.max_items:
                p.items[did] = item
            else:
                p.dropped += 1
        if len(p.items) >= p.sum_num or p.dropped:
            del self._pending[key]
            self._finished(key, now)
            return self._result(p, len(p.items) >= p.sum_num and not p.dropped)
        return None

    def _finished(self, key: tuple[str, int], now: float) -> None:
        self._done[key] = now
        self._done.move_to_end(key)
        while len(self._done) > self.max_pending:
            self._done.popitem(last=False)

    def expire(self, now: float) -> list[CatalogResult]:
        """Collections idle for `idle_s`, as partial results (`complete=False`)."""
        out, self._evicted = self._evicted, []
        while self._pending:
            key, p = next(iter(self._pending.items()))
            if now - p.last < self.idle_s:
                break
            del self._pending[key]
            self._finished(key, now)
            out.append(self._result(p, False))
        while self._done and now - next(iter(self._done.values())) >= self.idle_s:
            self._done.popitem(last=False)
        return out

    def next_deadline(self) -> float | None:
        """When the oldest open collection times out (for the driver's timer), None when none is open."""
        if self._evicted:
            return 0.0
        if not self._pending:
            return None
        return next(iter(self._pending.values())).last + self.idle_s

    def cancel(self, device_id: str) -> int:
        """Forget a device's open collections (it unregistered); returns how many."""
        keys = [k for k in self._pending if k[0] == device_id]
        for k in keys:
            del self._pending[k]
        return len(keys)

    @staticmethod
    def _result(p: _Pending, complete: bool) -> CatalogResult:
        return CatalogResult(p.device_id, p.sn, p.sum_num, list(p.items.values()), complete, p.dropped)


@dataclass(slots=True, frozen=True)
class Change:
    """One change to a device's catalog. `event` is ON OFF VLOST DEFECT ADD DEL UPDATE; `item` the
    item after it (before it for DEL); `node` True for a tree node."""

    event: str
    device_id: str
    item: CatalogItem
    node: bool = False


def _merge(old: CatalogItem, new: CatalogItem) -> CatalogItem:
    """`old` with every field `new` gives (an UPDATE may carry only what changed)."""
    given = {
        f.name: getattr(new, f.name)
        for f in dataclasses.fields(new)
        if f.name not in ("device_id", "kind", "event") and getattr(new, f.name) not in (None, ())
    }
    return dataclasses.replace(old, **given) if given else old


class Catalog:
    """One device's catalog: channels and tree nodes by DeviceID, with the fault each channel has
    from VLOST / DEFECT events (cleared by ON). A ParentID equal to `server_id` (the platform) is
    no parent and is removed from `parent_ids`."""

    def __init__(self, device_id: str, server_id: str | None = None, max_items: int = 10_000) -> None:
        self.device_id = device_id
        self.server_id = server_id
        self.max_items = max_items
        self._items: dict[str, CatalogItem] = {}
        self._faults: dict[str, str] = {}
        self.dropped = 0  # items refused by max_items
        self.complete = False  # the last replace came from a complete answer

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, device_id: str) -> bool:
        return device_id in self._items

    def get(self, device_id: str) -> CatalogItem | None:
        return self._items.get(device_id)

    def fault(self, device_id: str) -> str | None:
        """`VLOST` or `DEFECT` while a channel reports one, else None."""
        return self._faults.get(device_id)

    def channels(self) -> list[CatalogItem]:
        """Every item that is not a tree node: cameras, alarm inputs, and leaf devices whose ids say
        nothing (lax ids, DVR/NVR types in a lower platform's catalog)."""
        return [i for i in self._items.values() if i.kind not in NODE_KINDS]

    def nodes(self) -> list[CatalogItem]:
        """Regions, systems, business groups and virtual organisations."""
        return [i for i in self._items.values() if i.kind in NODE_KINDS]

    def _clean(self, item: CatalogItem) -> CatalogItem:
        parents = item.parent_ids
        if self.server_id and self.server_id in parents:
            parents = tuple(p for p in parents if p != self.server_id)
        if item.event is not None or parents != item.parent_ids:
            item = dataclasses.replace(item, parent_ids=parents, event=None)
        return item

    def replace(self, result: CatalogResult) -> list[Change]:
        """A fresh catalog answer. A complete one replaces everything (items it lacks are removed); a
        partial one only adds and updates, so a slow device does not lose channels it did not
        resend. Returns the changes (ADD, DEL, UPDATE)."""
        changes: list[Change] = []
        fresh: dict[str, CatalogItem] = {}
        for raw in result.items:
            item = self._clean(raw)
            if item.device_id not in fresh and len(fresh) >= self.max_items:
                self.dropped += 1
                continue
            fresh[item.device_id] = item
        for did, item in fresh.items():
            old = self._items.get(did)
            if old is None:
                changes.append(Change("ADD", did, item, item.kind in NODE_KINDS))
            elif old != item:
                changes.append(Change("UPDATE", did, item, item.kind in NODE_KINDS))
        if result.complete:
            for did, old in self._items.items():
                if did not in fresh:
                    changes.append(Change("DEL", did, old, old.kind in NODE_KINDS))
                    self._faults.pop(did, None)
            self._items = fresh
        else:
            for did, item in fresh.items():
                if did in self._items or len(self._items) < self.max_items:
                    self._items[did] = item
                else:
                    self.dropped += 1
        self.complete = result.complete
        return changes

    def apply(self, event_item: CatalogItem) -> Change | None:
        """A catalog NOTIFY item (its `event` set). Returns the change, or None for an unknown
        event, a DEL or status change of an item not in the catalog that brings nothing, or an ADD
        beyond `max_items`."""
        event = (event_item.event or "").upper()
        did = event_item.device_id
        item = self._clean(event_item)
        old = self._items.get(did)
        if event in ("ADD", "UPDATE"):
            new = item if old is None else _merge(old, item)
            if old is None and len(self._items) >= self.max_items:
                self.dropped += 1
                return None
            self._items[did] = new
            return Change(event, did, new, new.kind in NODE_KINDS)
        if event == "DEL":
            if old is None:
                return None
            del self._items[did]
            self._faults.pop(did, None)
            return Change("DEL", did, old, old.kind in NODE_KINDS)
        if event in ("ON", "OFF", "VLOST", "DEFECT"):
            base = _merge(old, item) if old is not None else item
            if event == "ON":
                self._faults.pop(did, None)
                new = dataclasses.replace(base, status="ON")
            elif event == "OFF":
                new = dataclasses.replace(base, status="OFF")
            else:
                self._faults[did] = event
                new = base
            if old is None and len(self._items) >= self.max_items:
                self.dropped += 1
                return None
            self._items[did] = new
            return Change(event, did, new, new.kind in NODE_KINDS)
        return None


# -- building catalog answers (the simulator, and a platform answering its superior) --------------


def item_fields(item: CatalogItem) -> dict[str, Any]:
    """A CatalogItem -> the MANSCDP `<Item>` fields for `manscdp.build` (None fields left out)."""
    parental = None if item.parental is None else (1 if item.parental else 0)
    return {
        "DeviceID": item.device_id,
        "Event": item.event,
        "Name": item.name,
        "Manufacturer": item.manufacturer,
        "Model": item.model,
        "Owner": item.owner,
        "CivilCode": item.civil_code,
        "Block": item.block,
        "Address": item.address,
        "Parental": parental,
        "ParentID": "/".join(item.parent_ids) or None,
        "SafetyWay": (item.safety_way),
        "RegisterWay": (item.register_way),
        "Secrecy": (item.secrecy),
        "IPAddress": item.ip,
        "Port": (item.port),
        "Status": item.status,
        "Longitude": (item.lon),
        "Latitude": (item.lat),
        "BusinessGroupID": item.business_group_id,
        "Info": {"PTZType": item.ptz_type} if item.ptz_type is not None else None,
    }


def build_catalog_chunks(
    sn: int,
    device_id: str,
    items: Iterable[CatalogItem | dict[str, Any]],
    *,
    root: str = "Response",
    charset: str = "GB2312",
    max_body: int = 1300,
    sum_num: int | None = None,
) -> list[bytes]:
    """A catalog as one or more bodies, each at most `max_body` bytes where one item allows (UDP
    bodies stay under about 1,400 bytes), all with the same SN and SumNum. `items` are CatalogItems
    or field dicts. An empty catalog is one body with SumNum 0 and no list."""
    fields = [item_fields(i) if isinstance(i, CatalogItem) else i for i in items]
    total = len(fields) if sum_num is None else sum_num
    if not fields:
        return [manscdp.build(root, "Catalog", sn, device_id, {"SumNum": total}, charset=charset)]

    def body(chunk: list[dict[str, Any]]) -> bytes:
        return manscdp.build(
            root, "Catalog", sn, device_id, {"SumNum": total, "DeviceList": manscdp.item_list(chunk)}, charset=charset
        )

    empty = len(body([])) + 4  # the Num attribute's extra digits
    sizes = [len(body([f])) - len(body([])) for f in fields]
    chunks: list[list[dict[str, Any]]] = []
    cur: list[dict[str, Any]] = []
    size = empty
    for f, n in zip(fields, sizes, strict=True):
        if cur and size + n > max_body:
            chunks.append(cur)
            cur, size = [], empty
        cur.append(f)
        size += n
    chunks.append(cur)
    return [body(c) for c in chunks]
