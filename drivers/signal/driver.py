"""The `signal` driver: one GB/T 20999 traffic-signal controller on a serial line or over TCP.

The link (tianwang.drivers.signal.link) may be shared with other controllers on the same line. The
driver polls lamp group states (3.3.2), the stage table (6.3.2-6.3.4) and the run status (13.2.2-
13.2.4) at `poll_hz`, and publishes `lamps` at every answered poll and `status` when mode, plan or
stage change (tianwang.drivers.signal.decode.Picture, shared with the offline decoder). Active reports
become `alarm`, `fault` and `traffic`. On first contact it learns the controller id (when the config
leaves it out), reads the device info (1.1-1.3) into ListDevices and sets the clock (13.1.10); the
clock is set again every `clock_sync_s`; a heartbeat query goes out every `heartbeat_s`.

Health: CONNECTING until the controller first answers; ONLINE while it answers in time; DEGRADED
when, of the last ten requests, two or more went unanswered or were answered later than `late_s`;
OFFLINE (the supervisor reports it after run() raises) when nothing came from the controller for
`offline_after_s`, or the link failed. The supervisor then reconnects with backoff.

Commands change what the junction shows only through a set the controller acknowledges value by
value AND a read-back that shows the new state; a set that times out is reported as TIMEOUT and never
sent again (the controller may have applied it: the next poll shows what it did).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from tianwang.drivers.sdk import CommandError, DeviceError, DeviceTimeout, Driver, Health
from tianwang.drivers.signal import protocol as p
from tianwang.drivers.signal.config import SignalConfig
from tianwang.drivers.signal.decode import Picture
from tianwang.drivers.signal.link import Link

if TYPE_CHECKING:
    from tianwang.drivers.sdk import DeviceContext, Publication

log = logging.getLogger("tianwang.driver.signal")

POLL_ITEMS = (
    p.LAMP_GROUP_STATE + (0,),
    p.STAGE_STATUS_ITEM + (0,),
    p.STAGE_ELAPSED + (0,),
    p.STAGE_REMAINING + (0,),
    p.RUN_MODE + (0,),
    p.RUN_PLAN + (0,),
    p.RUN_STAGE + (0,),
)
READ_BACK_ITEMS = (p.LAMP_GROUP_STATE + (0,), p.RUN_MODE + (0,), p.RUN_PLAN + (0,), p.RUN_STAGE + (0,))
INFO_ITEMS = ((1, 1, 0, 0), (1, 2, 0, 0), (1, 3, 0, 0))
WINDOW = 10  # requests judged for DEGRADED
BAD_IN_WINDOW = 2
SPECIAL_MODES = range(0x30, 0x40)
MANUAL_MODES = (0x15, 0x25)
PIPE = {"cancel": 0, "yellow_flash": 1, "all_red": 2, "lamps_on": 3, "lamps_off": 4, "restart": 5}
MODE_BY_NAME = {name: code for code, name in p.RUN_MODES.items()}
TX_NORMAL, TX_OPEN, TX_VERIFY, TX_DONE = 1, 2, 3, 6
TX_ITEM = (18, 2, 1, 0)  # 18.2.1 database transaction state, element 0
VERIFY_NOT_DONE, VERIFY_ERROR, VERIFY_OK = 1, 2, 3


def _int_arg(args: dict[str, Any], name: str, lo: int, hi: int, default: object = None) -> int:
    value = args.get(name, default)
    if value is None:
        raise CommandError("INVALID", f"{name}: required ({lo}-{hi})")
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value), 0)
        except ValueError:
            raise CommandError("INVALID", f"{name}: {value!r} is not an integer") from None
    if not lo <= value <= hi:
        raise CommandError("INVALID", f"{name}: {value} is out of range {lo}-{hi}")
    return value


def _int_list(args: dict[str, Any], name: str, lo: int, hi: int, default: object = None) -> list[int]:
    value = args.get(name, default)
    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split() if v]
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= 16:
        raise CommandError("INVALID", f"{name}: a list of 1-16 integers")
    return [_int_arg({name: v}, name, lo, hi) for v in value]


def _refusal(item_codes: list[tuple[str, int, int]]) -> CommandError:
    bad = [(item, element, code) for item, element, code in item_codes if code]
    text = ", ".join(f"{item}: {p.ERRORS.get(code, 'code')} (0x{code:02x})" for item, _, code in bad)
    return CommandError(
        "REFUSED",
        f"controller refused {text}",
        result={
            "errors": [
                {"item": item, "element": element, "code": code, "error": p.ERRORS.get(code, f"code_0x{code:02x}")}
                for item, element, code in bad
            ]
        },
    )


class SignalDriver(Driver[SignalConfig]):
    """One controller. See the module docstring."""

    def __init__(self, config: SignalConfig, ctx: DeviceContext) -> None:
        super().__init__(config, ctx)
        self.profile = p.PROFILES[config.profile]
        self.controller_id: int | None = config.controller_id
        self.picture = Picture(config.utc_offset_s)
        self.link: Link | None = None
        self._outcomes: collections.deque[str] = collections.deque(maxlen=WINDOW)  # ok, late, unanswered
        self._last_heard = 0.0
        self._command_busy = False
        self._info_done = False
        self._tx_open = False  # a plan transaction was opened and not yet closed or abandoned
        self._tx_abandon: asyncio.Future[bool] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    async def run(self) -> None:
        cfg, ctx = self.config, self.ctx
        link = self.link = Link.attach(self, cfg)
        try:
            ctx.set_health(
                Health.CONNECTING,
                f"opening {link.where}"
                if cfg.tcp_role == "connect"
                else f"waiting on {link.where} for the controller to dial in",
            )
            await link.open()
            ctx.set_health(
                Health.CONNECTING,
                f"{link.where} open, waiting for controller {self.controller_id or '(any id)'} to answer",
            )
            ctx.set_info(
                transport=link.scheme,
                link=link.where,
                profile=cfg.profile,
                **({"controller_id": self.controller_id} if self.controller_id else {}),
            )
            self._outcomes.clear()
            self._last_heard = asyncio.get_running_loop().time()
            self._info_done = False
            poller = asyncio.ensure_future(self._poll_loop())
            lost = link.lost
            assert lost is not None  # open() returns once the link is up, with its `lost` future
            try:
                waiting: set[asyncio.Future[Any]] = {poller, lost}
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            finally:
                while not poller.done():
                    poller.cancel()
                    await asyncio.wait({poller}, timeout=1.0)
            if lost in done:
                raise lost.result()
            poller.result()  # raises why polling stopped
            raise DeviceError("polling stopped")
        finally:
            link.detach(self)

    async def close(self) -> None:
        link, self.link = self.link, None
        if link is not None:
            link.detach(self)

    # -- polling ---------------------------------------------------------------------------------------
    async def _poll_loop(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        period = 1.0 / cfg.poll_hz
        next_poll = loop.time()
        next_heartbeat = loop.time() + cfg.heartbeat_s if cfg.heartbeat_s else None
        next_clock = None
        failures_in_row = 0
        while True:
            now = loop.time()
            if now - self._last_heard >= cfg.offline_after_s:
                raise DeviceTimeout(
                    f"nothing from controller {self.controller_id or '(unknown id)'} for {cfg.offline_after_s:g} s"
                )
            if now < next_poll:
                await asyncio.sleep(next_poll - now)
            # a controller that keeps failing is asked less often, so it cannot crowd a shared line
            next_poll = max(next_poll + period * (3 if failures_in_row >= 3 else 1), loop.time())
            reply = await self._ask(p.query(0, 0, POLL_ITEMS), "poll")
            if reply is None:
                failures_in_row += 1
                continue
            failures_in_row = 0
            if reply.frame_type == p.FrameType.QUERY_ERROR:
                self.ctx.count("polls_refused")
            else:
                self.ctx.count("polls_answered")
                self._publish(reply.values)
            if self._tx_open and not self._command_busy:
                # a transaction left open (the link dropped while abandoning it): abandon it now
                await self._abandon_transaction()
            if not self._info_done:
                self._info_done = True
                await self._first_contact()
                if cfg.clock_sync:
                    await self._sync_clock()
                    next_clock = loop.time() + cfg.clock_sync_s if cfg.clock_sync_s else None
            if next_clock is not None and loop.time() >= next_clock:
                await self._sync_clock()
                next_clock = loop.time() + cfg.clock_sync_s
            if next_heartbeat is not None and loop.time() >= next_heartbeat:
                next_heartbeat = loop.time() + cfg.heartbeat_s
                if await self._ask(p.heartbeat(0, 0), "heartbeat") is not None:
                    self.ctx.count("heartbeats")

    def _live_link(self) -> Link:
        if self.link is None:  # a command before the first run()
            raise DeviceError("the link is not open yet")
        return self.link

    async def _ask(self, msg: p.Message, what: str, timeout: float | None = None) -> p.Message | None:
        """One request, judged for health; None when it went unanswered."""
        try:
            reply, took = await self._live_link().request(self, msg, timeout or self.config.reply_timeout_s)
        except DeviceTimeout:
            self.ctx.count(f"{what}s_unanswered")
            self._judge(False, None)
            return None
        self._heard(reply)
        self._judge(True, took)
        return reply

    def _heard(self, reply: p.Message) -> None:
        self._last_heard = asyncio.get_running_loop().time()
        if self.controller_id is None and reply.controller:
            self.controller_id = reply.controller
            self.ctx.set_info(controller_id=reply.controller)
            log.info("%s: controller id %d learned from its reply", self.ctx.device_id, reply.controller)

    def _judge(self, answered: bool, took: float | None) -> None:
        late = answered and took is not None and took > self.config.late_s
        self._outcomes.append("ok" if answered and not late else "late" if answered else "unanswered")
        if not any(o != "unanswered" for o in self._outcomes):
            return  # never answered this connection: still CONNECTING (OFFLINE comes from silence)
        unanswered = self._outcomes.count("unanswered")
        slow = self._outcomes.count("late")
        n = len(self._outcomes)
        if unanswered >= BAD_IN_WINDOW:
            self.ctx.set_health(Health.DEGRADED, f"{unanswered} of the last {n} requests unanswered")
        elif slow >= BAD_IN_WINDOW:
            self.ctx.set_health(Health.DEGRADED, f"{slow} of the last {n} replies later than {self.config.late_s:g} s")
        elif answered:
            self.ctx.set_health(Health.ONLINE, "answering polls")

    def _publish(self, values: Iterable[p.DataValue]) -> None:
        out: list[Publication] = []
        self.picture.values(values, out)
        publish = self.ctx.publish
        for pub in out:
            publish(pub.channel, pub.payload, pub.device_time_ns)

    def on_report(self, msg: p.Message) -> None:
        """An active report (alarms, faults, detector data) from this controller."""
        self._last_heard = asyncio.get_running_loop().time()
        self.ctx.count("reports")
        self._publish(msg.values)

    async def _first_contact(self) -> None:
        reply = await self._ask(p.query(0, 0, INFO_ITEMS), "info")
        if reply is None or reply.frame_type != p.FrameType.QUERY_REPLY:
            return
        info = {}
        for v in reply.values:
            name = {1: "manufacturer", 2: "version", 3: "serial"}.get(v.obj) if v.cls == 1 else None
            if name:
                info[name] = v.value.rstrip(b"\x00").decode("gb18030", "replace").strip()
        if info:
            self.ctx.set_info(**info)

    async def _sync_clock(self) -> None:
        # GB/T 20999 13.1.10: the controller's UTC time, a 7-byte date
        value = p.make_date7(time.time_ns())
        reply = await self._ask(p.set_request(0, 0, [p.UTC_TIME + (0, value)]), "clock_sync")
        if (
            reply is not None
            and reply.frame_type == p.FrameType.SET_REPLY
            and not any(v.value[:1] != b"\x00" for v in reply.values)
        ):
            self.ctx.count("clock_syncs")
        else:
            self.ctx.count("clock_syncs_failed")
            log.warning("%s: the controller did not accept the clock", self.ctx.device_id)

    # -- commands --------------------------------------------------------------------------------------
    async def command(self, action: str, args: dict, timeout: float) -> dict:
        if self.link is None or not self.link.is_up:
            raise CommandError("OFFLINE", "the link to the controller is not open")
        if self._command_busy or (self._tx_abandon is not None and not self._tx_abandon.done()):
            raise CommandError("BUSY", "another command to this controller is in progress")
        self._command_busy = True
        deadline = asyncio.get_running_loop().time() + max(0.05, timeout - 0.1)  # answer before the gateway gives up
        try:
            if action == "read":
                return await self._read(args, deadline)
            if action in ("specify_stage", "specify_plan", "specify_mode"):
                return await self._specify(action, args, deadline)
            if action in PIPE:
                return await self._pipe(action, deadline)
            if action == "download_plan":
                return await self._download_plan(args, deadline)
            raise CommandError("UNSUPPORTED", f"no action {action!r}")
        finally:
            self._command_busy = False

    async def _abandon_in_background(self) -> None:
        """Abandon the open transaction in a task of its own, with time of its own: the command's
        deadline may be spent and its caller gone. Waits for it unless cancelled (then it goes on
        by itself, and the command stays BUSY until it is done)."""
        if self._tx_abandon is None or self._tx_abandon.done():
            self._tx_abandon = asyncio.ensure_future(self._abandon_transaction())
        await asyncio.shield(self._tx_abandon)

    async def _abandon_transaction(self) -> bool:
        """Tell the controller: back to normal (18.2.1 = 1). True once it acknowledged; until then
        `_tx_open` stays set and the next contact with the controller tries again."""
        if not self._tx_open:
            return True
        if self.link is None or not self.link.is_up:
            return False
        deadline = asyncio.get_running_loop().time() + self.config.command_timeout_s
        try:
            await self._set([TX_ITEM + (bytes((TX_NORMAL,)),)], deadline)
        except CommandError as exc:
            self.ctx.count("transactions_abandon_failed")
            log.warning(
                "%s: could not abandon the plan transaction (%s); trying again at the next poll",
                self.ctx.device_id,
                exc.message,
            )
            return False
        self._tx_open = False
        self.ctx.count("transactions_abandoned")
        log.info("%s: plan transaction abandoned; the controller is back to normal", self.ctx.device_id)
        return True

    def _left(self, deadline: float) -> float:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0.01:
            raise CommandError("TIMEOUT", "the command ran out of time")
        return min(left, self.config.command_timeout_s)

    async def _request(self, msg: p.Message, deadline: float) -> p.Message:
        try:
            reply, _took = await self._live_link().request(self, msg, self._left(deadline))
        except DeviceTimeout:
            if msg.frame_type == p.FrameType.SET:
                raise CommandError(
                    "TIMEOUT",
                    "no answer to the set; it was not sent again (the controller may "
                    "have applied it: the next poll shows what it does)",
                ) from None
            raise CommandError("TIMEOUT", "no answer to the query") from None
        except DeviceError as exc:
            raise CommandError("OFFLINE", str(exc)) from None
        self._heard(reply)
        return reply

    async def _set(self, items: list[tuple[int, int, int, int, bytes]], deadline: float) -> None:
        """Set every value; return only when the controller acknowledged each with status 0."""
        reply = await self._request(p.set_request(0, 0, items), deadline)
        codes = [(v.name, v.element, v.value[0] if v.value else 0x40) for v in reply.values]
        if reply.frame_type == p.FrameType.SET_ERROR or any(c for _, _, c in codes) or len(codes) != len(items):
            if not any(c for _, _, c in codes):
                codes = [(f"{i[0]}.{i[1]}.{i[2]}", i[3], 0x40) for i in items]
            raise _refusal(codes)

    async def _query(self, items: Iterable[tuple[int, int, int, int]], deadline: float) -> p.Message:
        reply = await self._request(p.query(0, 0, items), deadline)
        if reply.frame_type == p.FrameType.QUERY_ERROR:
            raise _refusal([(v.name, v.element, v.value[0] if v.value else 0x40) for v in reply.values])
        return reply

    async def _read_back(self, check: Callable[[dict[str, Any]], bool], deadline: float, what: str) -> dict[str, Any]:
        """Read run status and lamps until `check(state)` holds; the state it saw."""
        state: dict[str, Any] = {}
        while True:
            try:
                reply = await self._query(READ_BACK_ITEMS, deadline)
            except CommandError as exc:
                if exc.code != "TIMEOUT" or asyncio.get_running_loop().time() >= deadline - 0.05:
                    if exc.code == "TIMEOUT":
                        raise CommandError(
                            "UNCONFIRMED",
                            f"the controller accepted the command but did not answer the read-back of {what}",
                            result=state,
                        ) from None
                    raise
                continue
            self._publish(reply.values)
            run = p.run_status(reply.values)
            groups = p.lamp_groups(reply.values)
            state = {
                "mode": run.get("mode"),
                "mode_code": run.get("mode_code"),
                "plan": run.get("plan"),
                "stage": run.get("stage"),
                "groups": groups,
            }
            if check(state):
                return state
            if asyncio.get_running_loop().time() + 0.25 >= deadline:
                raise CommandError(
                    "UNCONFIRMED",
                    f"the controller accepted the command but the read-back does "
                    f"not show {what}: mode {state['mode']}, plan {state['plan']}, stage "
                    f"{state['stage']}",
                    result=state,
                )
            await asyncio.sleep(0.2)

    async def _read(self, args: dict, deadline: float) -> dict:
        item = (
            _int_arg(args, "class", 1, 255),
            _int_arg(args, "object", 1, 255),
            _int_arg(args, "attribute", 0, 255, 0),
            _int_arg(args, "element", 0, 255, 0),
        )
        reply = await self._query([item], deadline)
        values = []
        for v in reply.values:
            text = v.value.rstrip(b"\x00")
            values.append(
                {
                    "item": v.name,
                    "element": v.element,
                    "hex": v.value.hex(),
                    "uint": int.from_bytes(v.value, "big") if 0 < len(v.value) <= 8 else None,
                    "text": text.decode("ascii")
                    if text and text.isascii() and text.decode("ascii").isprintable()
                    else None,
                }
            )
        return {"values": values}

    async def _specify(self, action: str, args: dict, deadline: float) -> dict:
        if action == "specify_stage":
            value = _int_arg(args, "stage", 1, 255)
            item, key, what = self.profile.control_item("stage"), "stage", f"stage {value}"
        elif action == "specify_plan":
            value = _int_arg(args, "plan", 1, 255)
            item, key, what = self.profile.control_item("plan"), "plan", f"plan {value}"
        else:
            mode = args.get("mode")
            if isinstance(mode, str) and mode in MODE_BY_NAME:
                value = MODE_BY_NAME[mode]
            else:
                try:
                    value = _int_arg(args, "mode", 1, 255)
                except CommandError:
                    raise CommandError(
                        "INVALID", f"mode: a run mode name ({', '.join(MODE_BY_NAME)}) or code"
                    ) from None
            item, key, what = self.profile.control_item("mode"), "mode_code", f"mode {p.RUN_MODES.get(value, value)}"
        await self._set([item + (0, bytes((value,)))], deadline)
        state = await self._read_back(lambda s: s[key] == value, deadline, what)
        return {"confirmed": True, **state}

    async def _pipe(self, action: str, deadline: float) -> dict:
        code = PIPE[action]
        await self._set([p.COMMAND_PIPE + (0, bytes((code,)))], deadline)

        def colours(s: dict[str, Any]) -> set[str]:
            return set(s["groups"].values())

        checks = {
            "yellow_flash": (
                lambda s: (
                    s["mode_code"] == 0x31
                    and bool(s["groups"])
                    and not colours(s) & {"green", "green_flash", "green_fast_flash"}
                ),
                "yellow flash",
            ),
            "all_red": (lambda s: s["mode_code"] == 0x32 and bool(s["groups"]) and colours(s) == {"red"}, "all red"),
            "lamps_off": (
                lambda s: s["mode_code"] == 0x33 and bool(s["groups"]) and colours(s) == {"off"},
                "lamps off",
            ),
            "lamps_on": (lambda s: s["mode_code"] not in (None, 0x33) and colours(s) != {"off"}, "lamps on"),
            "cancel": (
                lambda s: (
                    s["mode_code"] is not None
                    and s["mode_code"] not in SPECIAL_MODES
                    and s["mode_code"] not in MANUAL_MODES
                ),
                "the schedule running again",
            ),
            "restart": (lambda s: s["mode_code"] is not None, "the controller answering after its restart"),
        }
        check, what = checks[action]
        state = await self._read_back(check, deadline, what)
        return {"confirmed": True, **state}

    async def _download_plan(self, args: dict, deadline: float) -> dict:
        plan = _int_arg(args, "plan", 1, 16)
        greens = _int_list(args, "greens", 1, 255)
        chain = _int_list(args, "chain", 1, 255, default=list(range(1, len(greens) + 1)))
        if len(chain) != len(greens):
            raise CommandError("INVALID", f"chain: {len(chain)} stages for {len(greens)} green times")
        cycle = _int_arg(args, "cycle", 1, 0xFFFF)
        offset = _int_arg(args, "offset", 0, 0xFFFF, 0)
        wanted = {2: cycle.to_bytes(2, "big"), 3: offset.to_bytes(2, "big"), 4: bytes(chain), 5: bytes(greens)}
        # GB/T 20999 18.2.1: normal 1 -> transaction 2 -> (write) -> verify 3 -> done 6
        # From the open on, the controller is in transaction mode (its plans read-only to everyone
        # else, a new transaction refused) until it is told otherwise: every way out of here that is
        # not the done (a refusal, a timeout, the caller's cancellation, a dropped link) abandons
        # the transaction (back to normal, the database as it was).
        self._tx_open = True
        done = False
        try:
            try:
                await self._set([TX_ITEM + (bytes((TX_OPEN,)),)], deadline)
            except CommandError as exc:
                if exc.code == "REFUSED":  # the controller said no: nothing is open (or not ours)
                    self._tx_open = False
                    done = True
                raise
            await self._set([(9, 1, a, plan, raw) for a, raw in wanted.items()], deadline)
            await self._set([TX_ITEM + (bytes((TX_VERIFY,)),)], deadline)
            while True:
                reply = await self._query([(18, 2, 2, 0)], deadline)
                status = reply.values[0].value[0] if reply.values and reply.values[0].value else VERIFY_NOT_DONE
                if status != VERIFY_NOT_DONE:
                    break
                await asyncio.sleep(0.1)
            if status != VERIFY_OK:
                raise CommandError(
                    "REFUSED",
                    f"the controller's verify rejected plan {plan} (status {status}); the transaction was abandoned",
                    result={"verify_status": status},
                )
            await self._set([TX_ITEM + (bytes((TX_DONE,)),)], deadline)
            done = True
            self._tx_open = False
        finally:
            if not done:
                await self._abandon_in_background()
        reply = await self._query([(9, 1, a, plan) for a in wanted], deadline)
        got = {v.attribute: v.value for v in reply.values}
        if got != wanted:
            raise CommandError(
                "UNCONFIRMED",
                f"plan {plan} reads back different from what was written",
                result={a: v.hex() for a, v in got.items()},
            )
        return {"confirmed": True, "plan": plan, "cycle_s": cycle, "offset_s": offset, "chain": chain, "greens": greens}
