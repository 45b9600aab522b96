"""DeviceContext.count_on_read: counters a driver keeps totals of itself are brought up to date
whenever the gateway shows them, not on the path of every reading."""

from __future__ import annotations

import logging

from tianwang.gateway.datapath.fanout import device_message
from tianwang.gateway.datapath.journal import Journal
from tianwang.gateway.datapath.router import Router
from tianwang.gateway.lifecycle.registry import Registry
from tianwang.gateway.lifecycle.supervisor import DeviceContext, DeviceEntry, Supervisor


class Totals:
    """What a decoder keeps: running totals; `sync` pushes what changed since it last did."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.epochs = 0
        self.seen = 0
        self.calls = 0

    def sync(self):
        self.calls += 1
        if self.epochs != self.seen:
            self.ctx.count("epochs", self.epochs - self.seen)
            self.seen = self.epochs


def context():
    entry = DeviceEntry("bd-1", "gnss", "beidou", None)
    return entry, DeviceContext(Supervisor(Registry(), Router(Journal(1 << 20))), entry)


def test_counters_are_brought_up_to_date_each_time_they_are_read():
    entry, ctx = context()
    totals = Totals(ctx)
    ctx.count_on_read(totals.sync)
    ctx.count("reconnects")
    totals.epochs = 7
    assert totals.calls == 0  # nothing is counted until someone looks
    assert entry.counters == {"reconnects": 1, "epochs": 7}
    totals.epochs = 12
    assert device_message(entry).counters["epochs"] == 12  # ListDevices reads them the same way
    assert dict(device_message(entry).counters) == {"reconnects": 1, "epochs": 12, "envelopes": 0}
    assert totals.calls == 3


def test_a_new_hook_takes_over_after_the_old_one_counted_what_it_held():
    entry, ctx = context()
    first = Totals(ctx)
    ctx.count_on_read(first.sync)
    first.epochs = 5
    second = Totals(ctx)  # the driver started again with a new decoder
    ctx.count_on_read(second.sync)
    first.epochs = 9  # the old decoder is no longer asked
    second.epochs = 2
    assert entry.counters == {"epochs": 7}
    second.epochs = 4
    ctx.count_on_read(None)  # the removed hook runs a last time
    second.epochs = 6
    assert entry.counters == {"epochs": 9}


def test_a_hook_that_fails_is_logged_and_the_counters_are_still_shown(caplog):
    entry, ctx = context()
    ctx.count("reconnects", 2)

    def broken():
        raise RuntimeError("decoder state gone")

    ctx.count_on_read(broken)
    with caplog.at_level(logging.ERROR, logger="tianwang.supervisor"):
        assert entry.counters == {"reconnects": 2}
    assert "bd-1: counting on read failed" in caplog.text and "decoder state gone" in caplog.text
