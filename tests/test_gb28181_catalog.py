"""Catalog collection (split answers, repeats, any order, idle timeout, bounds), one device's catalog
(channels vs tree nodes, NOTIFY events), and splitting a catalog into UDP-sized bodies."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from tianwang.drivers.gb28181 import manscdp
from tianwang.drivers.gb28181.catalog import Catalog, CatalogCollector, CatalogResult, build_catalog_chunks, item_fields
from tianwang.drivers.gb28181.manscdp import CatalogItem, build, item_list, parse

SERVER = "43030000002000000001"
DEV = "43030000001180000001"
PLACES = ["湘潭市岳塘区", "雨湖区", "湘潭县", "韶山市", "湘乡市", "九华", "昭山"]


def cam(n: int) -> str:
    return f"4303000000131{n:07d}"


def chunk_body(sn: int, sum_num: int, numbers) -> bytes:
    items = [
        {"DeviceID": cam(n), "Name": PLACES[n % len(PLACES)] + f"{n}号", "ParentID": DEV, "Status": "ON"}
        for n in numbers
    ]
    return build("Response", "Catalog", sn, DEV, {"SumNum": sum_num, "DeviceList": item_list(items)})


def feed(col: CatalogCollector, raw: bytes, now: float):
    msg = parse(raw)
    sum_num, items = manscdp.catalog_items(msg)
    return col.add(msg.device_id, msg.sn, sum_num, items, now)


def test_split_catalog_out_of_order_with_a_repeat_gives_seven_unique():
    col = CatalogCollector(idle_s=5)
    c1, c2, c3 = chunk_body(88, 7, [0, 1, 2]), chunk_body(88, 7, [3, 4, 5]), chunk_body(88, 7, [6])
    assert feed(col, c2, 0.0) is None
    assert feed(col, c1, 0.1) is None
    assert feed(col, c2, 0.2) is None  # repeated: still 6 unique, not 9
    assert len(col) == 1
    result = feed(col, c3, 0.3)
    assert isinstance(result, CatalogResult) and result.complete
    assert (result.device_id, result.sn, result.sum_num, result.dropped) == (DEV, 88, 7, 0)
    assert sorted(i.device_id for i in result.items) == [cam(n) for n in range(7)]
    assert {i.name for i in result.items} >= {"湘潭市岳塘区0号", "昭山6号"}
    assert len(col) == 0 and col.next_deadline() is None
    # a late retransmission of a chunk of the finished answer opens nothing
    assert feed(col, c1, 0.4) is None and len(col) == 0


def test_idle_timeout_gives_partial_result():
    col = CatalogCollector(idle_s=5)
    assert feed(col, chunk_body(9, 7, [0, 1, 2]), 10.0) is None
    assert feed(col, chunk_body(9, 7, [3]), 12.0) is None
    assert col.next_deadline() == 17.0
    assert col.expire(16.9) == []
    [partial] = col.expire(17.0)
    assert not partial.complete and partial.sum_num == 7
    assert [i.device_id for i in partial.items] == [cam(n) for n in range(4)]
    assert len(col) == 0 and col.expire(100.0) == []


def test_separate_devices_and_sns_collect_apart():
    col = CatalogCollector()
    a = manscdp.catalog_items(parse(chunk_body(1, 2, [0])))[1]
    b = manscdp.catalog_items(parse(chunk_body(2, 2, [1])))[1]
    assert col.add(DEV, 1, 2, a, 0) is None
    assert col.add(DEV, 2, 2, b, 0) is None
    assert col.add("other", 1, 2, b, 0) is None
    assert len(col) == 3
    assert col.add(DEV, 1, 2, b, 1).complete
    assert col.cancel("other") == 1 and len(col) == 1


def test_empty_catalog_completes_at_once():
    col = CatalogCollector()
    msg = parse(build("Response", "Catalog", 3, DEV, {"SumNum": 0}))
    r = col.add(msg.device_id, msg.sn, *manscdp.catalog_items(msg), 0)
    assert r.complete and r.items == []


def test_bounds_items_per_device_and_pending():
    col = CatalogCollector(max_items_per_device=5, max_pending=2)
    items = manscdp.catalog_items(parse(chunk_body(1, 8, range(8))))[1]
    r = col.add(DEV, 1, 8, items, 0)
    assert r is not None and not r.complete and len(r.items) == 5 and r.dropped == 3
    col.add("a", 1, 5, items[:1], 0)
    col.add("b", 1, 5, items[:1], 1)
    col.add("c", 1, 5, items[:1], 2)  # evicts a
    assert len(col) == 2 and col.next_deadline() == 0.0
    [evicted] = col.expire(2)
    assert evicted.device_id == "a" and not evicted.complete


@settings(max_examples=100, deadline=None)
@given(st.permutations(list(range(12))), st.integers(1, 5), st.data())
def test_any_order_and_repeats_complete_exactly_once(order, size, data):
    col = CatalogCollector(idle_s=100)
    chunks = [order[i : i + size] for i in range(0, 12, size)]
    sends = chunks + data.draw(st.lists(st.sampled_from(chunks), max_size=4))
    sends = data.draw(st.permutations(sends))
    results = []
    for t, c in enumerate(sends):
        r = feed(col, chunk_body(5, 12, c), float(t))
        if r is not None:
            results.append(r)
    assert len(results) == 1 and results[0].complete
    assert sorted(i.device_id for i in results[0].items) == [cam(n) for n in range(12)]


# -- Catalog --------------------------------------------------------------------------------------


def item(did, **kw) -> CatalogItem:
    return CatalogItem(device_id=did, kind=manscdp.item_kind(did), **kw)


def test_catalog_keeps_nodes_apart_and_drops_the_server_as_parent():
    cat = Catalog(DEV, server_id=SERVER)
    items = [
        item("43", name="湖南省"), item("4303", name="湘潭市"), item("430304", name="岳塘区"), item("43030401"),
        item("43030000002000000002", name="system"), item("43030000002150000001", name="业务分组"),
        item("43030000002160000001", name="虚拟组织", parent_ids=("43030000002150000001",)),
        item(cam(1), name="岳塘1", parent_ids=(SERVER, DEV)), item("43030000001320000002"),
        item("43030000001340000001", name="门磁"),
    ]  # fmt: skip
    changes = cat.replace(CatalogResult(DEV, 1, len(items), items, True))
    assert {c.event for c in changes} == {"ADD"} and len(changes) == 10
    assert {c.device_id for c in changes if c.node} == {"43", "4303", "430304", "43030401", "43030000002000000002",
                                                       "43030000002150000001", "43030000002160000001"}  # fmt: skip
    assert sorted(i.device_id for i in cat.channels()) == sorted(
        [cam(1), "43030000001320000002", "43030000001340000001"]
    )
    assert len(cat.nodes()) == 7 and len(cat) == 10
    assert cat.get(cam(1)).parent_ids == (DEV,)
    assert cat.complete


def test_catalog_replace_complete_removes_partial_keeps():
    cat = Catalog(DEV)
    cat.replace(CatalogResult(DEV, 1, 3, [item(cam(1)), item(cam(2)), item(cam(3))], True))
    changes = cat.replace(CatalogResult(DEV, 2, 3, [item(cam(1), name="new")], False))
    assert [(c.event, c.device_id) for c in changes] == [("UPDATE", cam(1))]
    assert len(cat) == 3 and not cat.complete
    changes = cat.replace(CatalogResult(DEV, 3, 2, [item(cam(1), name="new"), item(cam(4))], True))
    assert sorted((c.event, c.device_id) for c in changes) == [("ADD", cam(4)), ("DEL", cam(2)), ("DEL", cam(3))]
    assert sorted(i.device_id for i in cat.channels()) == [cam(1), cam(4)]


def test_catalog_notify_events():
    cat = Catalog(DEV)
    cat.replace(
        CatalogResult(DEV, 1, 2, [item(cam(1), name="A", status="ON"), item(cam(2), name="B", status="ON")], True)
    )
    off = cat.apply(item(cam(1), event="OFF"))
    assert off.event == "OFF" and cat.get(cam(1)).status == "OFF" and cat.get(cam(1)).name == "A"
    vlost = cat.apply(item(cam(2), event="VLOST"))
    assert vlost.event == "VLOST" and cat.fault(cam(2)) == "VLOST" and cat.get(cam(2)).status == "ON"
    assert cat.apply(item(cam(2), event="DEFECT")).event == "DEFECT" and cat.fault(cam(2)) == "DEFECT"
    on = cat.apply(item(cam(2), event="ON"))
    assert on.item.status == "ON" and cat.fault(cam(2)) is None
    add = cat.apply(item(cam(3), name="新增", event="ADD"))
    assert add.event == "ADD" and cat.get(cam(3)).name == "新增" and cat.get(cam(3)).event is None
    upd = cat.apply(item(cam(3), address="建设路", event="UPDATE"))
    assert upd.item.name == "新增" and upd.item.address == "建设路"
    dele = cat.apply(item(cam(1), event="DEL"))
    assert dele.event == "DEL" and cam(1) not in cat
    assert cat.apply(item(cam(1), event="DEL")) is None
    assert cat.apply(item(cam(2), event="WHATEVER")) is None
    node = cat.apply(item("430304", name="岳塘区", event="ADD"))
    assert node.node and len(cat.nodes()) == 1


def test_catalog_bound():
    cat = Catalog(DEV, max_items=2)
    cat.replace(CatalogResult(DEV, 1, 3, [item(cam(1)), item(cam(2)), item(cam(3))], True))
    assert len(cat) == 2 and cat.dropped == 1
    assert cat.apply(item(cam(9), event="ADD")) is None and cat.dropped == 2
    assert cat.apply(item(cam(1), event="UPDATE", name="x")) is not None


# -- building chunks ------------------------------------------------------------------------------


@pytest.mark.parametrize("charset", ["GB2312", "UTF-8"])
def test_build_catalog_chunks_fit_udp_and_parse_back(charset):
    items = [item(cam(n), name=PLACES[n % 7] + f"{n}号摄像机", address="湘潭市岳塘区建设北路", manufacturer="Tianwang",
                  parent_ids=(DEV,), status="ON", ptz_type=1 + n % 4, lon=112.94 + n / 1000, lat=27.83, parental=False)
             for n in range(40)]  # fmt: skip
    chunks = build_catalog_chunks(77, DEV, items, charset=charset, max_body=1300)
    assert len(chunks) > 3 and all(len(c) <= 1300 for c in chunks)
    col = CatalogCollector()
    results = [feed(col, c, 0) for c in reversed(chunks)]
    assert results[:-1] == [None] * (len(chunks) - 1) and results[-1].complete
    got = {i.device_id: i for i in results[-1].items}
    assert got == {i.device_id: i for i in items}  # every field survives the round trip


def test_build_empty_catalog_and_item_fields():
    [raw] = build_catalog_chunks(1, DEV, [])
    msg = parse(raw)
    assert manscdp.catalog_items(msg) == (0, []) and "DeviceList" not in msg.fields
    f = item_fields(item(cam(1), name="x", parent_ids=(DEV, "4303"), ptz_type=3, parental=True))
    assert f["ParentID"] == f"{DEV}/4303" and f["Info"] == {"PTZType": 3} and f["Parental"] == 1
    one_big = build_catalog_chunks(1, DEV, [item(cam(1), name="x" * 2000)], max_body=500)
    assert len(one_big) == 1  # a single item larger than the bound still goes out, alone
