"""The SDK's state files (gateway/lifecycle/statefile.py), as a third-party driver would use them:
a table of its own in a versioned JSON file, read with one-line errors, written whole with mode 0600,
in the background and coalesced, failures counted and retried by the next change."""

from __future__ import annotations

import asyncio
import logging
import os
import stat

import pytest

from tianwang.drivers.sdk import StateFile, StateFileError, read_state_file, write_state_file

FORMAT = "thermo.enrolments"
log = logging.getLogger("thermo.test")


class EnrolmentError(StateFileError):
    pass


def read(path):
    return read_state_file(
        path, FORMAT, 1, "sensors", label="enrolments file", kind="thermo enrolments file", error=EnrolmentError
    )


def write(path, table):
    write_state_file(path, FORMAT, 1, "sensors", table)


class Enrolments(StateFile):
    def __init__(self, path, on_write=None, min_interval_s=0.0):
        self.sensors = read(path) if path else {}
        super().__init__(
            path,
            snapshot=lambda: {k: dict(v) for k, v in self.sensors.items()},
            write=write,
            on_write=on_write,
            min_interval_s=min_interval_s,
            log=log,
            label="thermo enrolments",
        )

    def enrol(self, sensor, **rec):
        self.sensors[sensor] = rec
        self.save()


@pytest.mark.parametrize(
    "content, why",
    [
        (b"{", "corrupt: Expecting"),
        (b"\xff", "corrupt: not UTF-8 text"),
        (b'{"format": "other"}', 'not a thermo enrolments file (no "format": "thermo.enrolments")'),
        (b'{"format": "thermo.enrolments", "version": 2, "sensors": {}}', "version 2 is not 1"),
        (b'{"format": "thermo.enrolments", "version": 1, "sensors": []}', 'corrupt: "sensors" is not a map'),
    ],
)
def test_a_file_that_is_not_the_table_is_one_line_naming_it(tmp_path, content, why):
    path = tmp_path / "enrolments.json"
    path.write_bytes(content)
    with pytest.raises(EnrolmentError) as info:
        read(str(path))
    assert str(info.value).startswith(f"enrolments file {path}: ") and why in str(info.value)
    assert "\n" not in str(info.value) and isinstance(info.value, ValueError)
    with pytest.raises(EnrolmentError, match="is a directory"):
        read(str(tmp_path))


def test_a_missing_file_is_an_empty_table_and_a_write_reads_back_with_mode_0600(tmp_path):
    path = str(tmp_path / "enrolments.json")
    assert read(path) == {}
    write(path, {"t1": {"room": "北楼 3"}})
    assert read(path) == {"t1": {"room": "北楼 3"}}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and not os.path.exists(path + ".tmp")
    write_state_file(path, FORMAT, 1, "sensors", {"t2": {}}, indent=1)
    assert read(path) == {"t2": {}} and "\n" in open(path, encoding="utf-8").read()


async def test_changes_are_written_in_the_background_coalesced(tmp_path):
    path = str(tmp_path / "enrolments.json")
    reports = []
    table = Enrolments(path, on_write=reports.append, min_interval_s=0.05)
    for i in range(20):  # made before the writer first runs: one write holds them all
        table.enrol(f"t{i}", room=str(i))
    assert table.pending
    await table.flush()
    assert not table.pending and table.writes == 1 and reports == [""]
    assert len(read(path)) == 20
    table.enrol("t20", room="20")
    await table.flush()
    assert table.writes == 2 and read(path)["t20"] == {"room": "20"}
    assert Enrolments(path).sensors == read(path)


async def test_a_trickle_of_changes_costs_one_write_per_interval_and_a_flush_does_not_wait_it_out(tmp_path):
    path = str(tmp_path / "enrolments.json")
    table = Enrolments(path, min_interval_s=30.0)
    loop = asyncio.get_running_loop()
    table.enrol("t0")
    await table.flush()  # the first change is written at once
    assert table.writes == 1
    for i in range(1, 6):  # each change after the last write is done: still no write of its own
        table.enrol(f"t{i}")
        await asyncio.sleep(0.05)
    assert table.writes == 1 and table.pending and set(read(path)) == {"t0"}
    started = loop.time()
    await table.flush()  # a clean stop: written now, not 30 s later
    assert loop.time() - started < 10
    assert table.writes == 2 and not table.pending and len(read(path)) == 6


async def test_a_failed_write_is_counted_reported_and_retried_by_the_next_change(tmp_path, caplog):
    folder = tmp_path / "later"
    path = str(folder / "enrolments.json")  # its directory does not exist yet: writes fail
    reports = []
    table = Enrolments(path, on_write=reports.append)
    table.enrol("t1", room="1")
    with pytest.raises(OSError, match="cannot write"):
        await table.flush()
    assert table.write_errors >= 1 and table.last_error.startswith(f"cannot write {path}: ")
    assert reports and reports[0] == table.last_error
    assert any(r.getMessage().startswith("thermo enrolments: cannot write") for r in caplog.records)
    folder.mkdir()
    table.enrol("t2", room="2")
    await table.flush()
    assert table.last_error == "" and reports[-1] == "" and set(read(path)) == {"t1", "t2"}


def test_without_a_loop_a_change_is_written_at_once_and_a_loose_file_is_tightened(tmp_path, caplog):
    path = str(tmp_path / "enrolments.json")
    Enrolments(path).enrol("t1", room="1")
    assert read(path) == {"t1": {"room": "1"}}
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="thermo.test"):
        Enrolments(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "thermo enrolments: " + path + " was readable by others; mode set to 0600" in caplog.text
    memory = Enrolments(None)
    memory.enrol("t1")
    assert not memory.pending and memory.writes == 0
