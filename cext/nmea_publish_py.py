"""Epochs -> publications for one BeiDou receiver: pure-Python twin of `FixPublisher` in
`tianwang.cext._speedups` (cext/nmea_publish.pxi). Import it through `tianwang.gateway.framing`.

The per-epoch part of tianwang.drivers.beidou.receiver.ReceiverProtocol (see its docstring for the
rules), run once per epoch on every receiver and once per epoch of a capture by `tianwang decode`:
- process(items, now_ns, pubs): what the hot path's EpochAssembler gave, in stream order: NMEA
  Epochs are published, BinaryFrames go to the protocol's BinaryAssembler (`binary`) and the epochs
  it completes are published, anything else goes to `handlers[type(item)](item, pubs)` if present.
- epoch(e, now_ns, pubs): one epoch (NMEA or binary); when binary assemblers are present, one fix
  per epoch is chosen from the better source first.
- transition(state, reason, device_ns, pubs): a `state` publication on a change of state.
Publications are `publication(channel, payload, device_time_ns)` appended to `pubs`. With
`now_ns` None the device's epoch times are the clock (offline decoding: STALE is published when an
epoch comes more than `stale_ns` after the one before).

Attributes: state (None or the last state published), device_ns (latest epoch time, 0 before the
first), epoch_ns (caller's clock at the last epoch, None before), superseded (epochs not published
because another source's was), unused_frames and unused_bytes (binary frames that gave nothing).
"""

from __future__ import annotations


class FixPublisher:
    """See the module docstring. Raises ValueError for a protocol other than auto/nmea/casic/ubx."""

    def __init__(
        self,
        publication,
        epoch_type,
        frame_type,
        binary_epoch_type,
        binary,
        handlers,
        *,
        hdop_limit,
        min_sats,
        sky_decimation,
        stale_ns,
        protocol,
    ):
        if protocol not in ("auto", "nmea", "casic", "ubx"):
            raise ValueError(f"protocol must be one of auto, nmea, casic, ubx, not {protocol!r}")
        self._publication = publication
        self._epoch_type = epoch_type
        self._frame_type = frame_type
        self._binary_epoch_type = binary_epoch_type
        self._binary = dict(binary)
        self._handlers = dict(handlers)
        self.hdop_limit = float(hdop_limit)
        self.min_sats = int(min_sats)
        self.sky_decimation = int(sky_decimation)
        self.stale_ns = int(stale_ns)
        self.protocol = protocol
        self.state = None
        self.device_ns = 0
        self.epoch_ns = None
        self.superseded = 0
        self.unused_frames = 0
        self.unused_bytes = 0
        self._sky_count = 0
        self._last_epoch_device_ns = None
        self._binary_keys = {}
        self._held = {}  # source -> its first epoch, until the next one confirms the source
        self._binary_seen = False  # a binary epoch has been published
        self._nmea_run = 0  # NMEA epochs since the last binary one
        self._last_fix_ns = -1  # device time of the last fix published (binary receivers only)

    def process(self, items, now_ns, pubs):
        """Publish what `items` (from EpochAssembler.push) hold, in stream order; returns None."""
        epoch_type = self._epoch_type
        for item in items:
            t = type(item)
            if t is epoch_type:
                self.epoch(item, now_ns, pubs)
            elif t is self._frame_type:
                b = self._binary.get(item.protocol)
                used = 0
                if b is not None:
                    used = b.messages
                    for e in b.push(item):
                        self.epoch(e, now_ns, pubs)
                    used = b.messages - used
                if not used:
                    # a frame that passed its checksum but gives nothing: not a navigation message
                    # this receiver decodes, an impossible length, or the protocol not chosen
                    self.unused_frames += 1
                    self.unused_bytes += len(item.payload) + (8 if item.protocol == "ubx" else 10)
            else:
                handler = self._handlers.get(t)
                if handler is not None:
                    handler(item, pubs)

    def epoch(self, e, now_ns, pubs):
        """Publish one epoch (after choosing the source, when binary assemblers are present)."""
        if self._binary:
            for c in self._select(e):
                self._publish(c, now_ns, pubs)
        else:
            self._publish(e, now_ns, pubs)

    def transition(self, state, reason, device_ns, pubs):
        """A `state` publication, when `state` differs from the last one."""
        if state == self.state:
            return
        pubs.append(self._publication("state", {"state": state, "previous": self.state, "reason": reason}, device_ns))
        self.state = state

    def _publish(self, e, now_ns, pubs):
        device_ns = e.time_ns
        if device_ns < 0:
            device_ns = 0
        if now_ns is None:
            if device_ns:
                last = self._last_epoch_device_ns
                if last is not None and device_ns - last >= self.stale_ns:
                    self.transition(
                        "STALE", f"no epoch for {(device_ns - last) / 1e9:.1f} s", last + self.stale_ns, pubs
                    )
                self._last_epoch_device_ns = self.device_ns = device_ns
        else:
            self.epoch_ns = now_ns
            if device_ns:
                self.device_ns = device_ns
        pubs.append(self._publication("fix", e.fix_payload(), device_ns))
        if e.no_fix_reason is not None:
            state = "NO_FIX"
        elif e.hdop > self.hdop_limit or e.sats_used_total < self.min_sats:
            state = "DEGRADED"
        else:
            state = "FIX"
        if state != self.state:  # the reason is worded only when it is published
            if state == "NO_FIX":
                reason = e.no_fix_reason
            elif state == "FIX":
                reason = f"{e.mode}D fix, {e.sats_used_total} satellites"
            elif e.hdop > self.hdop_limit:
                reason = f"HDOP {e.hdop:g} over {self.hdop_limit:g}"
            else:
                reason = f"{e.sats_used_total} satellites used, fewer than {self.min_sats}"
            self.transition(state, reason, device_ns, pubs)
        if self.sky_decimation and e.has_satellites:
            if self._sky_count % self.sky_decimation == 0:
                pubs.append(self._publication("sky", {"satellites": e.satellites()}, device_ns))
            self._sky_count += 1

    def _select(self, e):
        # one fix per epoch when binary and NMEA both come: the epochs to publish now, oldest first
        binary = type(e) is self._binary_epoch_type
        if binary:
            if self.protocol != "auto" and self.protocol != e.source:
                self.superseded += 1
                return []
            # a source counts once two epochs in a row moved its clock on by a plausible period (a
            # stray frame with a good checksum is not a receiver sending binary); the first of the
            # two is held until then
            last = self._binary_keys.get(e.source)
            self._binary_keys[e.source] = e.key
            held = self._held.pop(e.source, None)
            if last is None or not 0 < (e.key - last) % (1 << 32) <= 10_000:
                if held is not None:
                    self.superseded += 1
                self._held[e.source] = e
                return []
            self._binary_seen = True
            self._nmea_run = 0
            candidates = [e] if held is None or held.key != last else [held, e]
        elif self.protocol != "auto":
            self.superseded += 1
            return []
        else:
            if self._binary_seen:
                self._nmea_run += 1
                if self._nmea_run <= 3:
                    self.superseded += 1
                    return []
            candidates = [e]
        out = []
        for c in candidates:
            if c.time_ns >= 0:
                if (binary or self._binary_seen) and c.time_ns <= self._last_fix_ns:
                    self.superseded += 1
                    continue
                if c.time_ns > self._last_fix_ns:
                    self._last_fix_ns = c.time_ns
            out.append(c)
        return out
