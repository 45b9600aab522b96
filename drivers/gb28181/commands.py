"""Commands on GB/T 28181 devices and channels (SendCommand; the core checks the `control` grant
and audits every call).

Argument names are the ONVIF driver's where the action is the same (`pan`, `tilt`, `zoom`,
`duration_s`; a preset is its `token`), so a command centre speaks one vocabulary to both kinds of
camera. Each action goes to the device or channel it names: a channel's command is sent to its
device (at the device's last address) with the channel's ID as the MANSCDP DeviceID.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from tianwang.drivers.gb28181 import manscdp, ptz
from tianwang.drivers.gb28181.session import local_time_ns, local_time_text
from tianwang.drivers.sdk import CommandError

if TYPE_CHECKING:
    from tianwang.drivers.gb28181.driver import Gb28181Listener, _Device

# one action on a device or channel: (listener, device, target, args, timeout) -> result
Handler = Callable[["Gb28181Listener", "_Device", str, dict[str, Any], float], Awaitable[dict[str, Any]]]

log = logging.getLogger("tianwang.driver.gb28181")

MAX_MOVE_S = 60.0
RECORD_TYPES = ("all", "time", "alarm", "manual")


def _plain(value: Any) -> Any:
    """A reader's dataclass (or list of them) as msgpack-able maps."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (frozenset, set)):
        return sorted(_plain(v) for v in value)
    return value


def _only(action: str, args: dict[str, Any], allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    extra = sorted(set(args) - set(allowed))
    if extra:
        took = ", ".join(allowed) if allowed else "no arguments"
        raise CommandError("INVALID", f"{action} takes {took}; got {', '.join(extra)}")


def _velocity(args: dict, name: str) -> float:
    value = args.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise CommandError("INVALID", f"{name} must be a number from -1 to 1")
    try:
        v = float(value)
    except ValueError:
        raise CommandError("INVALID", f"{name} must be a number from -1 to 1, not {value!r}") from None
    if not math.isfinite(v) or not -1.0 <= v <= 1.0:
        raise CommandError("INVALID", f"{name} must be from -1 to 1, not {value!r}")
    return v


def _number(args: dict[str, Any], name: str, low: int, high: int, default: int | None = None) -> int:
    value = args.get(name, default)
    if value is None:
        raise CommandError("INVALID", f"{name} is required ({low}-{high})")
    try:
        n = int(str(value).strip())
    except ValueError:
        raise CommandError("INVALID", f"{name} must be a number {low}-{high}, not {value!r}") from None
    if isinstance(value, bool) or not low <= n <= high:
        raise CommandError("INVALID", f"{name} must be {low}-{high}, not {value!r}")
    return n


def _time_arg(args: dict, name: str, default: float | None = None) -> str:
    """A record query time: epoch seconds (a number) or a local time string as MANSCDP writes it."""
    value = args.get(name)
    if value is None:
        if default is None:
            raise CommandError("INVALID", f"{name} is required (epoch seconds or yyyy-MM-ddTHH:mm:ss Beijing time)")
        return local_time_text(default)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise CommandError("INVALID", f"{name} must be a time, not {value!r}")
        return local_time_text(float(value))
    if isinstance(value, str) and local_time_ns(value) is not None:
        return value.strip()[:19]
    raise CommandError("INVALID", f"{name} must be epoch seconds or yyyy-MM-ddTHH:mm:ss (Beijing time), not {value!r}")


async def _control(
    lst: Gb28181Listener, dev: _Device, target: str, fields: list[tuple[str, Any]], timeout: float, what: str
) -> int:
    """A DeviceControl MESSAGE that gets no application answer (PTZ, TeleBoot): the SIP 200 is all."""
    out = dev.session.control(target, fields)
    _req, fut = lst.request(dev, "MESSAGE", target, body=out.body, content_type="Application/MANSCDP+xml")
    try:
        resp = await asyncio.wait_for(fut, timeout)
    except TimeoutError:
        raise CommandError("TIMEOUT", f"{target} did not answer {what} within {timeout:g} s") from None
    if resp.status >= 300:
        raise CommandError("REFUSED", f"{target} answered {what} with {resp.status} {resp.reason}")
    return out.sn


def _send_stop(lst: Gb28181Listener, dev: _Device, target: str) -> asyncio.Future[Any] | None:
    """Send the PTZ stop without waiting: it goes out even when the caller is gone."""
    out = dev.session.control(target, [("PTZCmd", ptz.stop_cmd())])
    return lst.send_body(dev, out, target)


async def ptz_move(
    lst: Gb28181Listener, dev: _Device, target: str, args: dict[str, Any], timeout: float
) -> dict[str, Any]:
    _only("ptz_move", args, ("pan", "tilt", "zoom", "duration_s"))
    pan, tilt, zoom = (_velocity(args, k) for k in ("pan", "tilt", "zoom"))
    try:
        duration = float(args.get("duration_s", 1.0))
    except (TypeError, ValueError):
        raise CommandError("INVALID", "duration_s must be a number of seconds") from None
    if not math.isfinite(duration) or not 0.05 <= duration <= MAX_MOVE_S:
        raise CommandError("INVALID", f"duration_s must be 0.05-{MAX_MOVE_S:g} s")
    if duration >= timeout:
        raise CommandError("INVALID", f"duration_s ({duration:g} s) must fit the command timeout ({timeout:g} s)")
    cmd = ptz.ptz_cmd(pan, tilt, zoom)
    started = time.monotonic()
    try:
        await _control(lst, dev, target, [("PTZCmd", cmd)], timeout - duration, "PTZ")
        await asyncio.sleep(duration)
    finally:
        # the stop always goes, whatever happened to the move or to the caller
        stop = _send_stop(lst, dev, target)
    moved = time.monotonic() - started
    if stop is not None:
        try:
            resp = await asyncio.wait_for(asyncio.shield(stop), max(0.5, min(5.0, timeout - moved)))
        except (TimeoutError, CommandError):
            raise CommandError("TIMEOUT", f"{target}: the stop was sent but not acknowledged") from None
        if resp.status >= 300:
            raise CommandError("REFUSED", f"{target} answered the stop with {resp.status} {resp.reason}")
    return {"target": target, "moved_s": round(moved, 3), "pan": pan, "tilt": tilt, "zoom": zoom, "ptz_cmd": cmd}


async def ptz_stop(
    lst: Gb28181Listener, dev: _Device, target: str, args: dict[str, Any], timeout: float
) -> dict[str, Any]:
    _only("ptz_stop", args, ())
    cmd = ptz.stop_cmd()
    await _control(lst, dev, target, [("PTZCmd", cmd)], timeout, "PTZ stop")
    return {"target": target, "ptz_cmd": cmd}


async def preset(
    lst: Gb28181Listener, dev: _Device, target: str, args: dict[str, Any], timeout: float, op: str
) -> dict[str, Any]:
    action = f"preset_{op}"
    _only(action, args, ("token", "name") if op == "set" else ("token",))
    number = _number(args, "token", 1, 255)
    cmd = ptz.preset_cmd(op, number)
    await _control(lst, dev, target, [("PTZCmd", cmd)], timeout, action)
    return {"target": target, "token": str(number), "ptz_cmd": cmd}


async def preset_list(
    lst: Gb28181Listener, dev: _Device, target: str, args: dict[str, Any], timeout: float
) -> dict[str, Any]:
    _only("preset_list", args, ())
    answer = await lst.ask(dev, dev.session.query("PresetQuery", target), timeout, target)
    presets = [{"token": str(p.preset_id), "name": p.name or ""} for p in manscdp.preset_items(answer)]
    return {"target": target, "presets": presets}


async def reset_alarm(
    lst: Gb28181Listener, dev: _Device, target: str, args: dict[str, Any], timeout: float
) -> dict[str, Any]:
    _only("reset_alarm", args, ("method", "type"))
    method = _number(args, "method", 1, 7) if "method" in args else None
    alarm_type = _number(args, "type", 0, 99) if "type" in args else None
    out = dev.session.reset_alarm(target, method, alarm_type)
    answer = await lst.ask(dev, out, timeout, target)
    return {"target": target, "result": _result(answer)}


def _result(msg: manscdp.Message) -> str:
    return manscdp.response_result(msg) or "OK"


async def record_query(
    lst: Gb28181Listener, dev: _Device, target: str, args: dict[str, Any], timeout: float
) -> dict[str, Any]:
    _only("record_query", args, ("start", "end", "type"))
    now = time.time()
    start = _time_arg(args, "start", now - 86400)
    end = _time_arg(args, "end", now)
    kind = str(args.get("type", "all"))
    if kind not in RECORD_TYPES:
        raise CommandError("INVALID", f"type must be one of {', '.join(RECORD_TYPES)}")
    out = dev.session.query(
        "RecordInfo", target, [("StartTime", start), ("EndTime", end), ("Secrecy", "0"), ("Type", kind)]
    )
    sum_num, items, complete = await lst.ask(dev, out, timeout, target)
    return {
        "target": target,
        "start": start,
        "end": end,
        "type": kind,
        "sum_num": sum_num,
        "complete": complete,
        "records": _plain(items),
    }


async def device_info(
    lst: Gb28181Listener, dev: _Device, target: str, args: dict[str, Any], timeout: float
) -> dict[str, Any]:
    _only("device_info", args, ())
    answer = await lst.ask(dev, dev.session.query("DeviceInfo", target), timeout, target)
    return {"target": target, **_plain(manscdp.device_info(answer))}


async def device_status(
    lst: Gb28181Listener, dev: _Device, target: str, args: dict[str, Any], timeout: float
) -> dict[str, Any]:
    _only("device_status", args, ())
    answer = await lst.ask(dev, dev.session.query("DeviceStatus", target), timeout, target)
    return {"target": target, **_plain(manscdp.device_status(answer))}


async def catalog(
    lst: Gb28181Listener, dev: _Device, target: str, args: dict[str, Any], timeout: float
) -> dict[str, Any]:
    _only("catalog", args, ())
    result = await lst.ask(dev, dev.session.query("Catalog"), timeout)
    return {
        "target": dev.id,
        "sum_num": result.sum_num,
        "complete": result.complete,
        "channels": [item.device_id for item in dev.session.catalog.channels()],
        "nodes": [item.device_id for item in dev.session.catalog.nodes()],
    }


async def reboot(
    lst: Gb28181Listener, dev: _Device, target: str, args: dict[str, Any], timeout: float
) -> dict[str, Any]:
    _only("reboot", args, ())
    await _control(lst, dev, target, [("TeleBoot", "Boot")], timeout, "TeleBoot")
    return {"target": target, "rebooting": True}


async def play(lst: Gb28181Listener, dev: _Device, target: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
    if lst.media is None:  # made when the listener runs
        raise CommandError("OFFLINE", f"{lst.ctx.device_id} is not running")
    return await lst.media.play(dev, target, args, timeout)


async def stop_play(
    lst: Gb28181Listener, dev: _Device, target: str, args: dict[str, Any], timeout: float
) -> dict[str, Any]:
    if lst.media is None:
        raise CommandError("OFFLINE", f"{lst.ctx.device_id} is not running")
    return await lst.media.stop_play(dev, target, args, timeout)


ACTIONS: dict[str, Handler] = {
    "ptz_move": ptz_move,
    "ptz_stop": ptz_stop,
    "preset_set": partial(preset, op="set"),
    "preset_goto": partial(preset, op="goto"),
    "preset_delete": partial(preset, op="delete"),
    "preset_list": preset_list,
    "reset_alarm": reset_alarm,
    "record_query": record_query,
    "device_info": device_info,
    "device_status": device_status,
    "catalog": catalog,
    "reboot": reboot,
    "play": play,
    "stop_play": stop_play,
}


async def on_target(
    lst: Gb28181Listener, dev: _Device, target: str, action: str, args: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """`action` on device `dev` or on its channel `target`. Raises CommandError."""
    fn = ACTIONS.get(action)
    if fn is None:
        if action == "registrations":
            raise CommandError("UNSUPPORTED", f"registrations goes to the listener, {lst.ctx.device_id}")
        raise CommandError("UNSUPPORTED", f"gb28181 devices take {', '.join(ACTIONS)}, not {action!r}")
    if not dev.session.registered:
        raise CommandError("OFFLINE", f"{dev.id} is not registered")
    try:
        return await fn(lst, dev, target, args, timeout)
    except manscdp.ManscdpError as exc:  # the device's answer is not what the reader takes
        raise CommandError("FAILED", f"{target} answered {action} with a body that cannot be read: {exc}") from None


async def on_listener(lst: Gb28181Listener, action: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
    """`registrations` on the listener itself: every registration (no passwords)."""
    if action == "registrations":
        _only("registrations", args, ())
        out: list[dict[str, Any]] = []
        for dev_id, rec in sorted(lst.registry.devices.items()):
            dev = lst.devices.get(dev_id)
            out.append({"id": dev_id, **rec, "state": dev.session.state.value if dev is not None else "OFFLINE"})
        return {"persistent": lst.registry.path is not None, "devices": out}
    if action in ACTIONS:
        raise CommandError(
            "UNSUPPORTED",
            f"{lst.ctx.device_id} is a listener: send {action} to a device or channel "
            f"(tianwang devices --family camera lists them)",
        )
    raise CommandError("UNSUPPORTED", f"the gb28181 listener takes registrations, not {action!r}")
