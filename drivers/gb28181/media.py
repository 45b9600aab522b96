"""Live video calls (`play` / `stop_play`): INVITE with an SDP offer for a media address the caller
gives, ACK of the device's answer, BYE on stop, on device loss and on shutdown.

The gateway carries no media: the caller names where the device is to send its RTP (PS-framed, as
GB/T 28181 has it), usually a port a media server (ZLMediaKit's `openRtpServer`) opened for it,
and gets back the SSRC, the device's SDP answer and the call's ID. The SSRC follows the standard:
10 digits, the first 0 for live video, then digits 4-8 of the domain, then a sequence.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import TYPE_CHECKING, Any

from tianwang.drivers.gb28181 import sdp, sip, transaction
from tianwang.drivers.sdk import CommandError

if TYPE_CHECKING:
    from tianwang.drivers.gb28181.driver import Gb28181Listener, _Device

log = logging.getLogger("tianwang.driver.gb28181")

MAX_CALLS_PER_DEVICE = 16
BYE_TIMEOUT_S = 1.0  # within the supervisor's 2 s for a close


class Call:
    __slots__ = (
        "call_id",
        "from_tag",
        "to_tag",
        "cseq",
        "dev_id",
        "target",
        "ssrc",
        "offered",
        "media",
        "uri",
        "answer",
    )

    def __init__(
        self,
        call_id: str,
        from_tag: str,
        cseq: int,
        dev_id: str,
        target: str,
        ssrc: str,
        media: tuple[str, int, str],
        uri: str,
    ) -> None:
        self.call_id = call_id
        self.from_tag = from_tag
        self.to_tag: str | None = None
        self.cseq = cseq
        self.dev_id = dev_id
        self.target = target
        self.ssrc = ssrc
        self.offered = ssrc
        self.media = media
        self.uri = uri
        self.answer = ""


def _media_args(args: dict[str, Any]) -> tuple[str, int, str]:
    extra = sorted(set(args) - {"host", "port", "transport", "ssrc"})
    if extra:
        raise CommandError("INVALID", f"play takes host, port, transport, ssrc; got {', '.join(extra)}")
    host = args.get("host")
    try:
        host = str(ipaddress.ip_address(str(host)))
    except ValueError:
        raise CommandError("INVALID", "host must be the IP address the device sends its media to") from None
    try:
        port = int(args["port"])
    except (KeyError, TypeError, ValueError):
        raise CommandError("INVALID", "port must be the media port (1-65535)") from None
    if not 0 < port < 65536:
        raise CommandError("INVALID", "port must be 1-65535")
    transport = str(args.get("transport", "udp")).lower()
    if transport not in ("udp", "tcp"):
        raise CommandError("INVALID", "transport must be udp or tcp")
    return host, port, transport


class Calls:
    """The listener's live calls, by Call-ID."""

    def __init__(self, lst: Gb28181Listener) -> None:
        self.lst = lst
        self.calls: dict[str, Call] = {}
        self.ssrcs = sdp.SsrcPool(lst.config.domain or lst.config.server_id[:10])

    def _of(self, dev_id: str, target: str | None = None) -> list[Call]:
        return [c for c in self.calls.values() if c.dev_id == dev_id and (target is None or c.target == target)]

    async def play(self, dev: _Device, target: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        lst = self.lst
        host, port, transport = _media_args(args)
        if len(self._of(dev.id)) >= MAX_CALLS_PER_DEVICE:
            raise CommandError("BUSY", f"{dev.id} has {MAX_CALLS_PER_DEVICE} calls open already")
        wanted = args.get("ssrc")
        if wanted is not None:
            # the media receiver chose it (a superior platform's y=, relayed by an uplink): its media
            # server tells streams apart by it
            ssrc = str(wanted)
            if not (len(ssrc) == 10 and ssrc.isdigit() and int(ssrc) <= 0xFFFFFFFF):
                raise CommandError("INVALID", "ssrc must be 10 digits (the y= of GB/T 28181), at most 4294967295")
            if not self.ssrcs.claim(ssrc):
                raise CommandError("BUSY", f"SSRC {ssrc} is in use by another call")
        else:
            try:
                ssrc = self.ssrcs.take()
            except RuntimeError:
                raise CommandError("BUSY", "every live SSRC of the domain is in use") from None
        offer = sdp.build_offer(
            session_id=ssrc[-4:],
            origin_id=lst.config.server_id,
            ip=host,
            port=port,
            transport=transport,
            ssrc=ssrc,
            kind="Play",
            channel=target,
        )
        subject = f"{target}:{ssrc},{lst.config.server_id}:0"
        try:
            req, fut = lst.request(
                dev, "INVITE", target, body=offer, content_type="APPLICATION/SDP", headers=[("Subject", subject)]
            )
        except CommandError:
            self.ssrcs.release(ssrc)
            raise
        # request() gave the INVITE a From tag of ours
        call = Call(
            req.call_id, req.from_.tag or "", req.cseq[0], dev.id, target, ssrc, (host, port, transport), req.uri
        )
        self.calls[call.call_id] = call
        try:
            resp = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            self._forget(call)
            raise CommandError("TIMEOUT", f"{target} did not answer the INVITE within {timeout:g} s") from None
        except BaseException:
            self._forget(call)
            raise
        if resp.status >= 300:
            self._forget(call)
            if dev.route is not None:
                lst.send(dev.route, transaction.ack_for(req, resp))  # a refused INVITE is ACKed too
            raise CommandError("REFUSED", f"{target} answered the INVITE with {resp.status} {resp.reason}")
        call.to_tag = resp.to.tag
        self._ack(dev, call)
        answer = resp.body.decode("utf-8", "replace")
        call.answer = answer
        try:
            got_ssrc = sdp.parse_sdp(resp.body).ssrc or ssrc
        except sip.SipError:
            dev.ctx.drop("bad_sdp")
            got_ssrc = ssrc
        call.ssrc = got_ssrc
        dev.ctx.count("calls")
        dev.ctx.set_info(calls=str(len(self._of(dev.id))))
        return {
            "target": target,
            "call_id": call.call_id,
            "ssrc": got_ssrc,
            "offered_ssrc": ssrc,
            "sdp": answer,
            "host": host,
            "port": port,
            "transport": transport,
        }

    def _forget(self, call: Call) -> None:
        self.calls.pop(call.call_id, None)
        self.ssrcs.release(call.offered)

    def _ack(self, dev: _Device, call: Call) -> None:
        lst = self.lst
        route = dev.route
        if route is None:
            return
        host, port = dev.local
        ack = sip.build_request(
            "ACK",
            call.uri,
            via_host=host,
            via_port=port,
            transport=route.transport,
            from_uri=lst.from_uri,
            from_tag=call.from_tag,
            to_uri=f"sip:{call.target}@{lst.config.domain}",
            to_tag=call.to_tag,
            call_id=call.call_id,
            cseq=call.cseq,
        )
        lst.send(route, ack)

    def _bye(self, dev: _Device, call: Call) -> asyncio.Future[sip.SipResponse] | None:
        call.cseq += 1
        try:
            _req, fut = self.lst.request(
                dev,
                "BYE",
                call.target,
                call_id=call.call_id,
                from_tag=call.from_tag,
                to_tag=call.to_tag,
                cseq=call.cseq,
            )
        except CommandError:
            return None
        return fut

    async def stop_play(self, dev: _Device, target: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        extra = sorted(set(args) - {"call_id"})
        if extra:
            raise CommandError("INVALID", f"stop_play takes call_id; got {', '.join(extra)}")
        call_id = args.get("call_id")
        calls = [self.calls[call_id]] if call_id in self.calls else ([] if call_id else self._of(dev.id, target))
        calls = [c for c in calls if c.dev_id == dev.id]
        if not calls:
            raise CommandError("NOT_FOUND", f"no call {call_id or 'of ' + target} open")
        futs = []
        for call in calls:
            self._forget(call)
            fut = self._bye(dev, call)
            if fut is not None:
                futs.append(fut)
        stopped = [c.call_id for c in calls]
        dev.ctx.set_info(calls=str(len(self._of(dev.id))))
        if futs:
            done, _ = await asyncio.wait(futs, timeout=timeout)
            if len(done) < len(futs):
                raise CommandError("TIMEOUT", f"{target} did not answer the BYE (the call is closed here)")
        return {"target": target, "stopped": stopped}

    def device_lost(self, dev: _Device, reason: str) -> None:
        """BYE every call of a device that went offline or unregistered (fire and forget)."""
        for call in self._of(dev.id):
            self._forget(call)
            self._bye(dev, call)
            log.info("%s: call %s to %s ended: %s", self.lst.ctx.device_id, call.call_id, call.target, reason)
        dev.ctx.set_info(calls="0")

    def bye_from_device(self, req: sip.SipRequest) -> sip.SipResponse | None:
        call = self.calls.get(req.call_id)
        if call is None:
            return None
        self._forget(call)
        dev = self.lst.devices.get(call.dev_id)
        if dev is not None:
            dev.ctx.count("calls_ended_by_device")
            dev.ctx.set_info(calls=str(len(self._of(dev.id))))
            # said on the channel's `call` topic, so whoever relayed the call (a superior platform
            # through an uplink, a media server's controller) learns it ended without a stop_play
            ctx = self.lst.channel_ctx(dev, call.target)
            if ctx is not None:
                ctx.publish("call", {"call_id": call.call_id, "state": "ended", "by": "device", "ssrc": call.ssrc})
        return sip.build_response(req, 200)

    def stray_response(self, resp: sip.SipResponse) -> bool:
        """A retransmitted 200 to an INVITE already answered (the ACK was lost): ACK again."""
        try:
            cseq, method = resp.cseq
        except sip.SipError:
            return False
        call = self.calls.get(resp.call_id)
        if method != "INVITE" or call is None or resp.status >= 300:
            return False
        dev = self.lst.devices.get(call.dev_id)
        if dev is not None:
            self._ack(dev, call)
        return True

    async def close_all(self, reason: str) -> None:
        futs = []
        for call in list(self.calls.values()):
            dev = self.lst.devices.get(call.dev_id)
            self._forget(call)
            if dev is not None:
                fut = self._bye(dev, call)
                if fut is not None:
                    futs.append(fut)
        if futs:
            await asyncio.wait(futs, timeout=BYE_TIMEOUT_S)
