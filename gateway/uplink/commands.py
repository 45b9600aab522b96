"""The superior's controls and calls, through the gateway's command path.

Every command the superior causes (PTZ, presets, a live-video call) is authorised by the uplink's
`control` patterns, run by the supervisor as a gRPC SendCommand would be, and audited on
`audit/<device>/command` with the same keys, the principal being `uplink:<id>`. A refusal is
answered with the GB error (`Result` ERROR, or the SIP status of a call), never silence.

Live video: an INVITE for a GB/T 28181 channel is relayed as the listener's `play` command (the
superior's SDP address and transport, the device's SDP answer back, BYE both ways); an INVITE for
an ONVIF camera is refused with 488 and the reason (there is no media path from ONVIF to GB yet).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from tianwang.drivers.gb28181 import sip
from tianwang.drivers.gb28181.ptz import decode_ptz_cmd
from tianwang.drivers.gb28181.sdp import parse_sdp
from tianwang.gateway.errors import CommandError, FrameError
from tianwang.gateway.uplink.ids import exposes

log = logging.getLogger("tianwang.uplink")

# a superior's PTZ move runs until its stop; the gateway's ptz_move needs a duration, so a move
# runs at most this long (a lost stop cannot leave a camera turning) and the stop cancels it
MOVE_S = 5.0
COMMAND_TIMEOUT_S = 10.0


class Commands:
    def __init__(self, uplink):
        self.up = uplink
        self.cfg = uplink.cfg
        self.moves: dict[str, asyncio.Task[Any]] = {}  # device id -> the running ptz_move
        # superior's Call-ID -> (device id, device call id, the superior's INVITE, our To tag)
        self.calls: dict[str, tuple[str, str, sip.SipRequest, str]] = {}

    # -- the command path -----------------------------------------------------------------------
    def audit(self, device_id, action, args, ok, code, message) -> int:
        payload = {
            "principal": self.up.principal,
            "action": action,
            "args": args,
            "args_bytes": 0,
            "reason": f"GB/T 28181 superior {self.cfg.superior_id}",
            "ok": ok,
            "code": code,
            "message": message,
        }
        try:
            return self.up.app.router.publish(f"audit/{device_id}/command", device_id, payload)
        except FrameError as exc:
            log.error("uplink %s: audit of %s on %s not recorded: %s", self.up.id, action, device_id, exc)
            return 0

    async def run(self, x, action: str, args: dict, timeout: float = COMMAND_TIMEOUT_S) -> dict:
        """Run `action` on an exposed device as the uplink; raises CommandError (audited either way)."""
        device_id = x.device_id
        app = self.up.app
        if not exposes(self.cfg.control, x.family, device_id):
            self.audit(
                device_id,
                action,
                args,
                False,
                "PERMISSION_DENIED",
                f"uplink {self.up.id} may not control {x.family}/{device_id}",
            )
            raise CommandError("PERMISSION_DENIED", f"uplink {self.up.id} may not control {x.family}/{device_id}")
        if app.journal.state == "failed":
            raise CommandError("UNAVAILABLE", "commands are refused while the journal cannot record them")
        entry = x.entry
        if entry.spec is None or entry.spec.action(action) is None:
            self.audit(
                device_id, action, args, False, "UNSUPPORTED", f"{entry.driver} devices have no action {action!r}"
            )
            raise CommandError("UNSUPPORTED", f"{entry.driver} devices have no action {action!r}")
        try:
            result = await app.supervisor.send_command(device_id, action, args, timeout)
        except CommandError as exc:
            self.audit(device_id, action, args, False, exc.code, exc.message)
            raise
        except asyncio.CancelledError:
            self.audit(device_id, action, args, False, "CANCELLED", "stopped by the superior")
            raise
        self.audit(device_id, action, args, True, "OK", "")
        return result

    # -- DeviceControl ------------------------------------------------------------------------
    async def control(self, msg, target: str, x) -> None:
        up = self.up
        fields = msg.fields
        ptz = text_of(fields.get("PTZCmd"))
        if ptz:
            await self._ptz(msg, target, x, ptz)
            return
        alarm_cmd = text_of(fields.get("AlarmCmd"))
        if alarm_cmd:
            # our alarms need no reset (the gateway reports every one); acknowledged as the standard asks
            await up.send_message(up.requests.response("DeviceControl", msg.sn, target, [("Result", "OK")]))
            return
        await up.send_message(up.requests.response("DeviceControl", msg.sn, target, [("Result", "ERROR")]))

    async def _ptz(self, msg, target, x, text) -> None:
        try:
            cmd = decode_ptz_cmd(text)
        except (FrameError, ValueError) as exc:
            await self._refuse(msg, target, f"PTZCmd {text[:20]!r}: {exc}")
            return
        if x is None:
            await self._refuse(msg, target, "the gateway itself has no PTZ")
            return
        args: dict[str, Any]
        if cmd.kind == "move":
            action, args = "ptz_move", {"pan": cmd.pan, "tilt": cmd.tilt, "zoom": cmd.zoom, "duration_s": MOVE_S}
        elif cmd.kind == "stop":
            action, args = "ptz_stop", {}
        elif cmd.kind == "preset" and cmd.op in ("set", "goto", "delete"):
            action, args = f"preset_{cmd.op}", {"token": str(cmd.preset)}
        else:
            await self._refuse(msg, target, f"PTZCmd {cmd.kind} is not supported")
            return
        previous = self.moves.pop(x.device_id, None)
        if previous is not None and not previous.done():
            previous.cancel()  # the driver's own stop goes out as the move ends
        task = asyncio.current_task()
        if action == "ptz_move" and task is not None:
            self.moves[x.device_id] = task
        try:
            await self.run(x, action, args, MOVE_S + 5.0 if action == "ptz_move" else COMMAND_TIMEOUT_S)
        except CommandError as exc:
            await self._refuse(msg, target, f"{exc.code}: {exc.message}")
        except asyncio.CancelledError:
            if self.moves.get(x.device_id) is asyncio.current_task():
                self.moves.pop(x.device_id, None)
            raise
        finally:
            if self.moves.get(x.device_id) is asyncio.current_task():
                self.moves.pop(x.device_id, None)
        # PTZ commands get no application answer when they succeed (the SIP 200 was all)

    async def _refuse(self, msg, target, reason: str) -> None:
        up = self.up
        up.count("controls_refused")
        log.info("uplink %s: DeviceControl on %s refused: %s", up.id, target, reason)
        await up.send_message(
            up.requests.response("DeviceControl", msg.sn, target, [("Result", "ERROR"), ("Reason", reason[:128])])
        )

    # -- calls ----------------------------------------------------------------------------------
    def call(self, req) -> None:
        up = self.up
        if req.method == "ACK":
            return
        if req.method == "CANCEL":
            up.link.respond(req, 200)
            return
        if req.method == "BYE":
            up.link.respond(req, 200)
            call = self.calls.pop(req.call_id, None)
            if call is not None:
                up.spawn(self._stop_call(call[0], call[1]), "bye")
            return
        target = req.request_uri.user or ""
        x = up.view.exposed().get(target)
        if x is None:
            up.link.respond(req, 404, "Unknown DeviceID")
            return
        if x.entry.driver != "gb28181":
            up.count("invites_refused")
            up.link.respond(
                req,
                488,
                "ONVIF camera: no GB media path yet",
                headers=[
                    (
                        "Warning",
                        f'399 tianwang "{x.device_id} is an ONVIF camera; the gateway has no '
                        'GB/T 28181 media path for it yet"',
                    )
                ],
            )
            return
        up.link.respond(req, 100)
        up.spawn(self._invite(req, x), "invite")

    async def _invite(self, req, x) -> None:
        up = self.up
        try:
            offer = parse_sdp(req.body)
            args = {"host": offer.connection_ip, "port": offer.port, "transport": offer.transport}
            if offer.ssrc:
                args["ssrc"] = offer.ssrc  # the superior's media server tells streams apart by its y=
        except (FrameError, ValueError) as exc:
            up.link.respond(req, 400, f"Bad SDP: {str(exc)[:60]}")
            return
        try:
            result = await self.run(x, "play", args)
        except CommandError as exc:
            status = {"PERMISSION_DENIED": 403, "OFFLINE": 480, "TIMEOUT": 480, "BUSY": 486, "INVALID": 488}.get(
                exc.code, 500
            )
            up.link.respond(req, status, f"{exc.code}: {exc.message}"[:100])
            return
        to_tag = sip.new_tag()
        self.calls[req.call_id] = (x.device_id, str(result.get("call_id", "")), req, to_tag)
        answer = result.get("sdp", "")
        answer = answer.encode() if isinstance(answer, str) else bytes(answer)
        link = up.link
        up.link.respond(
            req,
            200,
            to_tag=to_tag,
            headers=[("Contact", f"<sip:{x.gb_id}@{link.via_host}:{link.via_port}>")],
            body=answer,
            content_type="application/sdp",
        )

    async def _stop_call(self, device_id, call_id) -> None:
        x = self.up.view.by_device().get(device_id)
        if x is None:
            return
        try:
            await self.run(x, "stop_play", {"call_id": call_id} if call_id else {})
        except CommandError:
            pass

    def call_ended(self, device_id: str, lower_call_id: str) -> None:
        """The device ended a call relayed upward (its own BYE to the listener): BYE it upward too."""
        for call_id, call in list(self.calls.items()):
            if call[0] == device_id and call[1] == lower_call_id:
                del self.calls[call_id]
                self.up.spawn(self.bye_upward(call), "bye_upward")

    def device_gone(self, device_id: str) -> None:
        """A device with calls relayed upward went offline: BYE those calls towards the superior."""
        for call_id, call in list(self.calls.items()):
            if call[0] == device_id:
                del self.calls[call_id]
                self.up.spawn(self.bye_upward(call), "bye_upward")

    async def bye_upward(self, call) -> None:
        up = self.up
        _, _, invite, to_tag = call
        if up.link is None:
            return
        contact = invite.contact
        req = sip.build_request(
            "BYE",
            str(contact.uri) if contact is not None else str(invite.from_.uri),
            via_host=up.link.via_host,
            via_port=up.link.via_port,
            transport=self.cfg.transport,
            from_uri=str(invite.to.uri),
            from_tag=to_tag,
            to_uri=str(invite.from_.uri),
            to_tag=invite.from_.tag,
            call_id=invite.call_id,
            cseq=invite.cseq[0] + 1,
        )
        up.count("calls_ended_by_device")
        try:
            await up.link.request(req, 5.0)
        except (TimeoutError, ConnectionError):
            up.count("byes_unanswered")

    async def close(self) -> None:
        """The uplink stops: every call relayed upward gets its BYE (the devices' calls end with
        the listener's own shutdown, or here when only the uplink goes)."""
        calls, self.calls = list(self.calls.values()), {}
        if calls:
            await asyncio.wait([asyncio.ensure_future(self.bye_upward(c)) for c in calls], timeout=2.0)
            for device_id, device_call, _, _ in calls:
                x = self.up.view.by_device().get(device_id)
                if x is not None:
                    try:
                        await asyncio.wait_for(self._stop_call(device_id, device_call), 2.0)
                    except TimeoutError:
                        pass


def text_of(value) -> str | None:
    """The text of a parsed MANSCDP field (the first of a list, a dict's text); None when empty."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, dict):
        value = value.get("#text")
    return None if value is None else str(value).strip() or None
