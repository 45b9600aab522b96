"""A simulated GB/T 20999 traffic-signal controller, sans-io: messages in, messages out, time handed in.

`Controller.handle(msg, now)` answers one host message (query, set, heartbeat) with the messages the
controller sends back; `Controller.reports(now)` returns the active reports it pushes on its own
(detector counts, alarms, faults). The simulator (tianwang.drivers.signal.simulator) puts controllers
on a pty or a TCP port; tests can drive one directly.

The junction: six lamp groups (1-4 vehicle movements, 5-6 pedestrian crossings), four stages, three
plans and a day plan choosing the plan by the controller's local hour. A stage is green for the
plan's time (vehicle groups flash green, pedestrian groups flash green for the last 3 s), then 3 s
yellow, then 2 s all red (the stage status is `transition` for both), then the next stage.

Value layouts (the ones the public notes give, and this project's choice where they say nothing):
- 1.1 / 1.2 / 1.3 manufacturer, version, serial: ASCII.
- 3.3.2 lamp group state, 6.3.2-6.3.4 stage table, 13.2.2-13.2.4 run status: see protocol.py.
- 13.1.10 UTC time, 13.1.11 local time: 7-byte dates (sets also take 4-byte seconds for 13.1.10).
- 5.3.1 detector volume: 2 bytes per detector (the element), vehicles since the last report.
- 9.1.2 cycle (2 bytes), 9.1.3 offset (2 bytes), 9.1.4 stage chain (one byte per stage), 9.1.5 stage
  green times (one byte of seconds per stage); the element is the plan number.
- 15.1.1 alarm record: type(1) date(7) value(1); type 1 = lamp failure, value = the lamp group.
- 16.1.1 fault record: type(1) date(7) action(1); type 2 = green conflict, action 1 = yellow flash.
- 17.1.2/17.1.3/17.1.4 (or 17.2.1/17.3.1/17.4.1, profile `control-17n`): specified stage, plan, mode.
- 18.1.1 command pipe; 18.2.1 database transaction state; 18.2.2 verify status.
"""

from __future__ import annotations

import dataclasses
import random

from tianwang.drivers.signal import protocol as p

VEHICLE_GROUPS = (1, 2, 3, 4)
PEDESTRIAN_GROUPS = (5, 6)
GROUPS = VEHICLE_GROUPS + PEDESTRIAN_GROUPS
# stage -> the groups it gives green
STAGE_GROUPS = {1: (1, 5), 2: (2,), 3: (3, 6), 4: (4,)}
YELLOW_S = 3
ALL_RED_S = 2
FLASH_S = 3  # green flash before yellow (vehicles) / before red (pedestrians)

SCHEDULE_MODE = 0x21  # local fixed time, following the day plan
SPECIAL = {0x31: "yellow_flash", 0x32: "all_red", 0x33: "lamps_off"}
MANUAL = (0x15, 0x25)  # hold the stage the centre specified
# what the command pipe (18.1.1) codes do
PIPE_CANCEL, PIPE_YELLOW_FLASH, PIPE_ALL_RED, PIPE_LAMPS_ON, PIPE_LAMPS_OFF, PIPE_RESTART = range(6)
ALARM_LAMP_FAILURE = 1
FAULT_GREEN_CONFLICT = 2

TX_NORMAL, TX_OPEN, TX_VERIFY, TX_DONE = 1, 2, 3, 6
VERIFY_NOT_DONE, VERIFY_ERROR, VERIFY_OK = 1, 2, 3


@dataclasses.dataclass
class Plan:
    cycle_s: int
    offset_s: int
    chain: list[int]  # stages in order
    greens: list[int]  # green seconds per stage in `chain`

    def valid(self) -> bool:
        return (
            len(self.chain) == len(self.greens)
            and bool(self.chain)
            and all(s in STAGE_GROUPS for s in self.chain)
            and all(g >= 1 for g in self.greens)
            and self.cycle_s == sum(self.greens) + len(self.chain) * (YELLOW_S + ALL_RED_S)
        )


def make_plan(greens: list[int], chain=(1, 2, 3, 4), offset_s: int = 0) -> Plan:
    chain = list(chain)
    return Plan(sum(greens) + len(chain) * (YELLOW_S + ALL_RED_S), offset_s, chain, list(greens))


def default_plans() -> dict[int, Plan]:
    return {1: make_plan([8, 5, 8, 5]), 2: make_plan([12, 6, 12, 6]), 3: make_plan([5, 3, 5, 3])}


# day plan: (from local hour, plan)
DAY_PLAN = ((0, 3), (7, 2), (9, 1), (17, 2), (19, 3))


class Controller:
    """One controller. Public knobs for tests and the demo: `silent`, `delay_s` (answer late),
    `control_failed` (answer control sets with 0x50), and the fault injectors below."""

    def __init__(
        self,
        controller_id: int,
        profile: p.Profile = p.PROFILES["majority"],
        *,
        now: float | None = None,
        seed: int | None = None,
        utc_offset_s: int = 8 * 3600,
        traffic_s: float = 10.0,
        manufacturer: str = "Tianwang Sim",
        version: str = "SIM-2.1.0",
        restart_s: float = 1.0,
    ):
        self.id = controller_id
        self.profile = profile
        if now is None:
            import time

            now = time.time()
        self.rng = random.Random(controller_id if seed is None else seed)
        self.utc_offset_s = utc_offset_s
        self.traffic_s = traffic_s
        self.manufacturer = manufacturer
        self.version = version
        self.serial = f"SIM{controller_id:08d}"
        self.restart_s = restart_s
        self.plans = default_plans()
        self.clock_offset_s = 0.0  # the controller's clock minus the simulator's
        self.mode = SCHEDULE_MODE
        self.plan = self._scheduled_plan(now)
        self.chain_pos = 0
        # neighbouring controllers start at different points of their cycle, as real ones do
        self.stage_start = now - (controller_id * 7) % self.plans[self.plan].cycle_s
        self.specified_stage = 0
        self.specified_plan = 0
        self.silent = False
        self.delay_s = 0.0
        self.control_failed = False
        self.restart_until = 0.0
        self.tx_state = TX_NORMAL
        self.verify_status = VERIFY_NOT_DONE
        self.staged: dict[int, Plan] = {}
        self.failed_lamps: set[int] = set()
        self.volumes = {g: 0 for g in VEHICLE_GROUPS}
        self.next_traffic = now + traffic_s
        self._pending_reports: list[tuple] = []
        self._alarm_n = 0
        self._fault_n = 0
        self._report_seq = 0
        self.sets_seen = 0
        self.counters = {"queries": 0, "sets": 0, "heartbeats": 0, "errors": 0, "reports": 0, "commands": 0}

    # -- time and the stage clock -------------------------------------------------------------------
    def clock_ns(self, now_wall: float) -> int:
        return int((now_wall + self.clock_offset_s) * 1e9)

    def _scheduled_plan(self, now: float) -> int:
        import time

        hour = time.gmtime(now + self.utc_offset_s).tm_hour if now > 1e9 else 10
        plan = DAY_PLAN[0][1]
        for start, n in DAY_PLAN:
            if hour >= start:
                plan = n
        return plan if plan in self.plans else min(self.plans)

    def _advance(self, now: float) -> None:
        if self.mode in SPECIAL or self.mode in MANUAL:
            return
        plan = self.plans[self.plan]
        behind = now - self.stage_start
        if behind > 2 * plan.cycle_s > 0:  # long unobserved: skip whole cycles, keep the phase
            self.stage_start += (behind // plan.cycle_s - 1) * plan.cycle_s
        while True:
            green = plan.greens[self.chain_pos % len(plan.greens)]
            end = self.stage_start + green + YELLOW_S + ALL_RED_S
            if now < end:
                return
            self._count_traffic(self.stage, green)
            self.stage_start = end
            self.chain_pos = (self.chain_pos + 1) % len(plan.chain)

    def _count_traffic(self, stage: int, green_s: int) -> None:
        for g in STAGE_GROUPS.get(stage, ()):
            if g in self.volumes:
                self.volumes[g] += self.rng.randint(0, max(1, green_s // 2))

    @property
    def stage(self) -> int:
        if self.mode in MANUAL and self.specified_stage:
            return self.specified_stage
        plan = self.plans[self.plan]
        return plan.chain[self.chain_pos % len(plan.chain)]

    def _stage_timing(self, now: float) -> tuple[str, int, int, float]:
        """(part, elapsed_s, remaining_s, seconds into the stage) of the running stage."""
        t = max(0.0, now - self.stage_start)  # a restarting controller starts its first stage later
        if self.mode in MANUAL:
            return "green", int(t), 0, t
        plan = self.plans[self.plan]
        green = plan.greens[self.chain_pos % len(plan.greens)]
        total = green + YELLOW_S + ALL_RED_S
        part = "green" if t < green else "yellow" if t < green + YELLOW_S else "red"
        return part, int(t), max(0, int(total - t)), t

    def lamps(self, now: float) -> dict[int, int]:
        """{group: 3.3.2 state code}."""
        self._advance(now)
        if self.mode == 0x31:
            out = {g: 0x31 for g in VEHICLE_GROUPS} | {g: 0x01 for g in PEDESTRIAN_GROUPS}
        elif self.mode == 0x32:
            out = dict.fromkeys(GROUPS, 0x10)
        elif self.mode == 0x33:
            out = dict.fromkeys(GROUPS, 0x01)
        else:
            part, _, _, t = self._stage_timing(now)
            greens = STAGE_GROUPS.get(self.stage, ())
            out = dict.fromkeys(GROUPS, 0x10)
            plan = self.plans[self.plan]
            green_s = plan.greens[self.chain_pos % len(plan.greens)]
            flashing = self.mode not in MANUAL and t >= green_s - FLASH_S
            for g in greens:
                if g in PEDESTRIAN_GROUPS:
                    out[g] = (0x21 if flashing else 0x20) if part == "green" else 0x10
                else:
                    out[g] = {"green": 0x21 if flashing else 0x20, "yellow": 0x30, "red": 0x10}[part]
        for g in self.failed_lamps:
            out[g] = 0x01
        return out

    def _to_schedule(self, now: float) -> None:
        self.mode = SCHEDULE_MODE
        self.plan = self._scheduled_plan(now)
        self.specified_stage = self.specified_plan = 0
        self.chain_pos = 0
        self.stage_start = now

    # -- faults --------------------------------------------------------------------------------------
    def fail_lamp(self, group: int, now: float) -> None:
        """A lamp failure in `group`: the group goes dark and an alarm (15.1.1) is reported."""
        self.failed_lamps.add(group)
        self._alarm_n += 1
        record = bytes((ALARM_LAMP_FAILURE,)) + p.make_date7(self.clock_ns(now), self.utc_offset_s) + bytes((group,))
        self._pending_reports.append((p.ALARM_CLASS, 1, 1, self._alarm_n, record))

    def green_conflict(self, now: float) -> None:
        """Conflicting greens detected: the controller falls back to yellow flash and reports a fault
        (16.1.1) saying so."""
        self._fault_n += 1
        record = (
            bytes((FAULT_GREEN_CONFLICT,))
            + p.make_date7(self.clock_ns(now), self.utc_offset_s)
            + bytes((PIPE_YELLOW_FLASH,))
        )
        self.mode = 0x31
        self._pending_reports.append((p.FAULT_CLASS, 1, 1, self._fault_n, record))

    def repair(self, now: float) -> None:
        self.failed_lamps.clear()

    # -- answering -----------------------------------------------------------------------------------
    def answers(self, now: float) -> bool:
        return not self.silent and now >= self.restart_until

    def handle(self, msg: p.Message, now: float) -> list[p.Message]:
        """The controller's answer to one host message (empty when it stays silent)."""
        if msg.frame_type == p.FrameType.SET:
            self.sets_seen += 1  # what reached it, answered or not
        if not self.answers(now):
            return []
        header = {"host": msg.host, "road": msg.road, "version": msg.version}
        mine = dataclasses.replace(msg, controller=self.id)
        if msg.frame_type == p.FrameType.HEARTBEAT_QUERY:
            self.counters["heartbeats"] += 1
            return [p.heartbeat(self.id, msg.seq, reply=True, **header)]
        if msg.frame_type == p.FrameType.QUERY:
            self.counters["queries"] += 1
            out = []
            for v in msg.values:
                value = self._get(v.cls, v.obj, v.attribute, v.element, now)
                if value is None:
                    self.counters["errors"] += 1
                    return [p.error_reply(mine, 0x30)]
                out.append((v.cls, v.obj, v.attribute, v.element, value))
            return [p.query_reply(mine, out)]
        if msg.frame_type == p.FrameType.SET:
            self.counters["sets"] += 1
            codes = [self._check_set(v, now) for v in msg.values]
            if any(codes):
                self.counters["errors"] += 1
                values = tuple(
                    dataclasses.replace(v, value=bytes((c,))) for v, c in zip(msg.values, codes, strict=True)
                )
                return [dataclasses.replace(mine, frame_type=p.FrameType.SET_ERROR, values=values)]
            for v in msg.values:
                self._apply(v, now)
            return [p.set_reply(mine)]
        return []  # replies and reports are not for a controller

    def reports(self, now: float) -> list[p.Message]:
        """Active reports due at `now`: alarms and faults as they happen, detector volumes every
        `traffic_s` seconds."""
        if not self.answers(now):
            return []
        items = list(self._pending_reports)
        self._pending_reports.clear()
        if self.traffic_s and now >= self.next_traffic:
            self._advance(now)
            self.next_traffic = now + self.traffic_s
            for g in VEHICLE_GROUPS:
                items.append((5, 3, 1, g, min(self.volumes[g], 0xFFFF).to_bytes(2, "big")))
                self.volumes[g] = 0
        if not items:
            return []
        self.counters["reports"] += 1
        self._report_seq = (self._report_seq + 1) & 0xFF
        return [p.Message(p.FrameType.REPORT, self.id, self._report_seq, p._values(items))]

    # -- the data ------------------------------------------------------------------------------------
    def _get(self, cls: int, obj: int, attribute: int, element: int, now: float) -> bytes | None:
        if cls == 1 and attribute in (0, 1) and element == 0:
            text = {1: self.manufacturer, 2: self.version, 3: self.serial}.get(obj)
            return None if text is None else text.encode("ascii")
        if (cls, obj) == (2, 5):
            return self.id.to_bytes(4, "big")
        if (cls, obj, attribute) == (3, 3, 1):
            return bytes(GROUPS) if element == 0 else (bytes((element,)) if element in GROUPS else None)
        if (cls, obj, attribute) == p.LAMP_GROUP_STATE:
            lamps = self.lamps(now)
            if element == 0:
                return bytes(lamps[g] for g in GROUPS)
            return bytes((lamps[element],)) if element in lamps else None
        if (cls, obj) == (6, 3) and attribute in (1, 2, 3, 4):
            return self._stage_table(attribute, element, now)
        if (cls, obj, attribute) in (p.UTC_TIME, p.LOCAL_TIME):
            offset = 0 if attribute == 10 else self.utc_offset_s
            return p.make_date7(self.clock_ns(now), offset)
        if (cls, obj) == (13, 2) and attribute in (2, 3, 4):
            self._advance(now)
            return bytes(({2: self.mode, 3: self.plan, 4: self.stage}[attribute],))
        if (cls, obj, attribute) == (5, 3, 1) and element in self.volumes:
            return self.volumes[element].to_bytes(2, "big")
        if cls == 9 and obj == 1 and attribute in (2, 3, 4, 5):
            plan = self.plans.get(element)
            if plan is None:
                return None
            return {
                2: plan.cycle_s.to_bytes(2, "big"),
                3: plan.offset_s.to_bytes(2, "big"),
                4: bytes(plan.chain),
                5: bytes(plan.greens),
            }[attribute]
        if cls == p.CONTROL_CLASS:
            for what, value in (("stage", self.specified_stage), ("plan", self.specified_plan), ("mode", self.mode)):
                if self.profile.control_item(what) == (cls, obj, attribute):
                    return bytes((value,))
            return None
        if (cls, obj, attribute) == (18, 2, 1):
            return bytes((self.tx_state,))
        if (cls, obj, attribute) == (18, 2, 2):
            return bytes((self.verify_status,))
        return None

    def _stage_table(self, attribute: int, element: int, now: float) -> bytes | None:
        self._advance(now)
        stages = sorted(STAGE_GROUPS)
        part, elapsed, remaining, _ = self._stage_timing(now)
        special = self.mode in SPECIAL

        def row(s):
            running = s == self.stage and not special
            if attribute == 1:
                return bytes((s,))
            if attribute == 2:
                return bytes((0x10 if not running else 0x20 if part == "green" else 0x30,))
            return (elapsed if attribute == 3 else remaining).to_bytes(2, "big") if running else b"\x00\x00"

        if element == 0:
            return b"".join(row(s) for s in stages)
        return row(element) if element in STAGE_GROUPS else None

    def _check_set(self, v: p.DataValue, now: float) -> int:
        """0 when the value may be set, else the error code."""
        item, raw = v.item, v.value
        control = {self.profile.control_item(w): w for w in ("stage", "plan", "mode")}
        if item in control or item == p.COMMAND_PIPE:
            if self.control_failed:
                return 0x50
            if len(raw) != 1:
                return 0x11
            what = control.get(item)
            if what == "stage" and raw[0] not in STAGE_GROUPS:
                return 0x12
            if what == "plan" and raw[0] not in self.plans:
                return 0x12
            if what == "mode" and (raw[0] not in p.RUN_MODES or raw[0] in (0x10, 0x20, 0x30)):
                return 0x12
            if item == p.COMMAND_PIPE and raw[0] > PIPE_RESTART:
                return 0x12
            return 0
        if item == p.UTC_TIME:
            return 0 if len(raw) == 4 or p.date7(raw) is not None else (0x11 if len(raw) != 7 else 0x10)
        if item == p.LOCAL_TIME:
            return 0 if p.date7(raw) is not None else (0x11 if len(raw) != 7 else 0x10)
        if item == (18, 2, 1):
            if len(raw) != 1:
                return 0x11
            want, state = raw[0], self.tx_state
            ok = {
                TX_OPEN: state in (TX_NORMAL, TX_DONE),
                TX_VERIFY: state == TX_OPEN,
                TX_DONE: state == TX_VERIFY and self.verify_status == VERIFY_OK,
                TX_NORMAL: True,
            }
            return 0 if ok.get(want, False) else 0x40
        if v.cls == 9 and v.obj == 1 and v.attribute in (2, 3, 4, 5):
            if self.tx_state != TX_OPEN:
                return 0x20  # plans are read-only outside a database transaction
            if not 1 <= v.element <= 16:
                return 0x12
            if v.attribute in (2, 3) and len(raw) != 2:
                return 0x11
            if v.attribute in (4, 5) and not 1 <= len(raw) <= 16:
                return 0x11
            return 0
        if (v.cls, v.obj) in ((3, 3), (6, 3), (13, 2), (1, 1), (1, 2), (1, 3), (18, 2)):
            return 0x20
        return 0x30

    def _apply(self, v: p.DataValue, now: float) -> None:
        item, raw = v.item, v.value
        if item == p.UTC_TIME:
            t_ns = int.from_bytes(raw, "big") * 1_000_000_000 if len(raw) == 4 else p.date7(raw)
            if t_ns is not None:  # not a real date: the clock stays as it was
                self.clock_offset_s = t_ns // 1_000_000_000 - now
            return
        if item == p.LOCAL_TIME:
            local_ns = p.date7(raw, self.utc_offset_s)
            if local_ns is not None:
                self.clock_offset_s = local_ns // 1_000_000_000 - now
            return
        control = {self.profile.control_item(w): w for w in ("stage", "plan", "mode")}
        what = control.get(item)
        if what == "stage":
            self._advance(now)
            self.specified_stage = raw[0]
            self.mode = 0x15
            self.stage_start = now
        elif what == "plan":
            self.specified_plan = self.plan = raw[0]
            self.mode = 0x10
            self.chain_pos = 0
            self.stage_start = now
        elif what == "mode":
            self._advance(now)
            code = raw[0]
            if code in MANUAL:
                self.specified_stage = self.stage
                self.stage_start = now
            elif code not in SPECIAL:
                self.specified_stage = 0
            self.mode = code
        elif item == p.COMMAND_PIPE:
            self.counters["commands"] += 1
            self._pipe(raw[0], now)
        elif item == (18, 2, 1):
            self._transaction(raw[0])
        elif v.cls == 9:
            plan = self.staged.setdefault(
                v.element, dataclasses.replace(self.plans.get(v.element) or Plan(0, 0, [], []))
            )
            if v.attribute == 2:
                plan.cycle_s = int.from_bytes(raw, "big")
            elif v.attribute == 3:
                plan.offset_s = int.from_bytes(raw, "big")
            elif v.attribute == 4:
                plan.chain = list(raw)
            else:
                plan.greens = list(raw)

    def _pipe(self, code: int, now: float) -> None:
        if code == PIPE_CANCEL:
            self._to_schedule(now)
        elif code == PIPE_YELLOW_FLASH:
            self.mode = 0x31
        elif code == PIPE_ALL_RED:
            self.mode = 0x32
        elif code == PIPE_LAMPS_OFF:
            self.mode = 0x33
        elif code == PIPE_LAMPS_ON:
            if self.mode == 0x33:
                self._to_schedule(now)
        elif code == PIPE_RESTART:
            # the set reply goes out first; then the controller is gone for restart_s
            self.restart_until = now + self.restart_s
            self.failed_lamps.clear()
            self.tx_state = TX_NORMAL
            self.staged.clear()
            self._to_schedule(now + self.restart_s)

    def _transaction(self, want: int) -> None:
        if want == TX_OPEN:
            self.staged = {}
            self.verify_status = VERIFY_NOT_DONE
        elif want == TX_VERIFY:
            ok = all(plan.valid() for plan in self.staged.values())
            self.verify_status = VERIFY_OK if ok else VERIFY_ERROR
        elif want == TX_DONE:
            self.plans.update({n: dataclasses.replace(plan) for n, plan in self.staged.items()})
            self.staged = {}
        elif want == TX_NORMAL:
            self.staged = {}
            self.verify_status = VERIFY_NOT_DONE
        self.tx_state = want
