"""The heap keeper (gateway/lifecycle/heap.py): after a slow full collection, what survived it is
frozen so the next full collection does not walk it again; a quick one changes nothing."""

from __future__ import annotations

import asyncio
import gc

import pytest

from tianwang.gateway.lifecycle import heap
from tianwang.gateway.lifecycle.heap import HeapKeeper


class Channel:  # stands for the long-lived state devices build after start-up
    def __init__(self, n):
        self.n = n
        self.fields = {"id": n}


@pytest.fixture
def unfrozen():
    yield
    gc.unfreeze()  # the rest of the suite sees the collector as it was


def in_gen2(obj) -> bool:
    return any(o is obj for o in gc.get_objects(generation=2))


async def test_a_slow_full_collection_freezes_what_survived_it(unfrozen, monkeypatch):
    monkeypatch.setattr(heap, "CHECK_S", 0.01)
    keeper = HeapKeeper(slow_s=0.0)  # every full collection counts as slow
    state = [Channel(i) for i in range(1000)]
    keeper.start()
    try:
        gc.collect()
        assert keeper.full_collections >= 1 and in_gen2(state[0])
        for _ in range(200):  # the keeper's task freezes on the loop, not inside the collector
            if keeper.freezes:
                break
            await asyncio.sleep(0.01)
        assert keeper.freezes == 1
        assert keeper.frozen > len(state) and gc.get_freeze_count() > len(state)
        assert not in_gen2(state[0]) and not in_gen2(state[-1].fields)  # out of the collector's way
        fresh = Channel(-1)
        gc.collect()
        assert in_gen2(fresh)  # what came after the freeze is collected as before
    finally:
        await keeper.stop()
    assert keeper._on_gc not in gc.callbacks


async def test_quick_full_collections_and_younger_ones_freeze_nothing(unfrozen):
    keeper = HeapKeeper(slow_s=60.0)
    keeper.start()
    try:
        before = gc.get_freeze_count()
        gc.collect(0)
        gc.collect(1)
        assert keeper.full_collections == 0  # only full collections are watched
        gc.collect()
        assert keeper.full_collections == 1 and keeper.longest_s < 60.0
        assert not keeper.freeze_if_due() and gc.get_freeze_count() == before
    finally:
        await keeper.stop()
