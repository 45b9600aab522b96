"""Offline decoder for `tianwang decode --driver signal [--id ID] FILE`.

Input: the bytes a GB/T 20999 controller sent to its host over one link (the controller -> host
direction of a serial or TCP capture). Output: the publications a signal driver makes from them,
with the same framer and message layer:

- `lamps` for every query reply or active report that carries lamp group states (3.3.2):
  `groups{id: colour}`, `stage`, `plan`, `mode` (the run status last reported, None until known),
  and for the running stage `stage_status`, `elapsed_s`, `remaining_s` when the frame holds them;
- `status` whenever run mode, plan or stage change (13.2.2-13.2.4): `mode`, `mode_code`, `plan`,
  `stage`, `changed` (what changed) and `previous` (the values before);
- `alarm` for each class 15 record, `fault` for each class 16 record (type, time, action taken),
  `traffic` for each detector (5.3) or traffic data (class 14) value.

`device_time_ns` is the controller's own clock when the frame carries it (13.1.10 UTC time or
13.1.11 local time), the record's time for alarms and faults, else 0: GB/T frames carry no timestamp.

The first controller id seen is the device; frames from other controllers on a shared line, frames
the host sends (queries, sets), and frames that are not well-formed messages are counted in `drops`
(`other_controller`, `host_frame`, `bad_message`) beside the framer's reasons. `counters` counts
messages by kind.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tianwang.drivers.sdk import FramedDecoder, Gbt20999Framer, Publication
from tianwang.drivers.signal import protocol as p

# Chinese controllers keep local time, GMT+8, in their 7-byte dates.
DEFAULT_UTC_OFFSET_S = 8 * 3600


class Decoder(FramedDecoder):
    """See the module docstring. `frames`: good frames; `dropped_bytes`; `drops`: reason -> count."""

    family = "signal"

    def __init__(
        self,
        device_id: str = "capture",
        profile: p.Profile | str = "majority",
        utc_offset_s: int = DEFAULT_UTC_OFFSET_S,
        framer: Gbt20999Framer | None = None,
    ) -> None:
        super().__init__()
        self.device_id = device_id
        if isinstance(profile, str) and profile not in p.PROFILES:
            raise ValueError(f"profiles: {', '.join(p.PROFILES)}")
        self.profile = p.PROFILES[profile] if isinstance(profile, str) else profile
        self.utc_offset_s = utc_offset_s
        # `framer` lets tests run the decoder over either implementation
        self.framer = framer if framer is not None else self.profile.framer()
        self.controller: int | None = None
        self.picture = Picture(utc_offset_s)
        self.counters: dict[str, int] = {}

    def _extra_drops(self) -> dict[str, int]:
        return {"noise": self.framer.resyncs}  # runs of bytes skipped between frames

    # -- decoding ----------------------------------------------------------------------------------
    def feed(self, data: bytes) -> list[Publication]:
        return self._frames(self.framer.feed(data))

    def finish(self) -> list[Publication]:
        return self._frames(self.framer.finish())

    def _frames(self, frames: Iterable[bytes]) -> list[Publication]:
        out: list[Publication] = []
        for content in frames:
            try:
                msg = p.parse(content)
            except p.Gbt20999Error as exc:
                self._drop(exc.reason)
                continue
            if msg.frame_type not in p.FROM_CONTROLLER:
                self._drop("host_frame")
                continue
            if self.controller is None:
                self.controller = msg.controller
            elif msg.controller != self.controller:
                self._drop("other_controller")
                continue
            self.counters[msg.kind] = self.counters.get(msg.kind, 0) + 1
            if msg.frame_type in (p.FrameType.QUERY_REPLY, p.FrameType.REPORT):
                self.picture.values(msg.values, out)
        return out


class Picture:
    """What one controller shows, as the signal topics carry it: `values(data values, out)` appends
    the publications a query reply or report makes (see the module docstring). Shared by the
    offline decoder and the driver, so the two cannot disagree."""

    def __init__(self, utc_offset_s: int = DEFAULT_UTC_OFFSET_S) -> None:
        self.utc_offset_s = utc_offset_s
        self.run: dict[str, Any] = {"mode": None, "mode_code": None, "plan": None, "stage": None}
        self.groups: dict[str, str] = {}

    def values(self, values: Iterable[p.DataValue], out: list[Publication], now_ns: int = 0) -> None:
        """`now_ns`: the time for frames that carry no clock of their own (the driver passes the wall
        clock; the offline decoder 0)."""
        t = p.controller_time(values, self.utc_offset_s) or now_ns
        run = p.run_status(values)
        changed = [k for k in ("mode", "plan", "stage") if k in run and run[k] != self.run[k]]
        if changed:
            previous = {k: self.run[k] for k in ("mode", "plan", "stage")}
            self.run.update(run)
            out.append(
                Publication(
                    "status",
                    {
                        "mode": self.run["mode"],
                        "mode_code": self.run["mode_code"],
                        "plan": self.run["plan"],
                        "stage": self.run["stage"],
                        "changed": changed,
                        "previous": previous,
                    },
                    t,
                )
            )
        groups = p.lamp_groups(values)
        if groups:
            self.groups = groups
            payload: dict[str, Any] = {
                "groups": groups,
                "stage": self.run["stage"],
                "plan": self.run["plan"],
                "mode": self.run["mode"],
            }
            stage_info = p.stages(values)
            current = self.run["stage"]
            if current is None:  # no 13.2.4 yet: the stage the status table says is running
                current = next((s for s, info in stage_info.items() if info.get("status") == "running"), None)
                payload["stage"] = current
            info = stage_info.get(current, {}) if current is not None else {}
            payload["stage_status"] = info.get("status")
            payload["elapsed_s"] = info.get("elapsed_s")
            payload["remaining_s"] = info.get("remaining_s")
            out.append(Publication("lamps", payload, t))
        for v in values:
            if v.cls == p.ALARM_CLASS:
                a = p.alarm(v, self.utc_offset_s)
                out.append(Publication("alarm", a, a["time_ns"] or t))
            elif v.cls == p.FAULT_CLASS:
                f = p.fault(v, self.utc_offset_s)
                out.append(Publication("fault", f, f["time_ns"] or t))
            elif v.cls == p.TRAFFIC_CLASS or (v.cls, v.obj) == p.DETECTOR_DATA:
                out.append(Publication("traffic", p.traffic(v), t))
