# A BeiDou receiver's epochs -> fix, state and sky publications (FixPublisher). Twin: FixPublisher in
# cext/nmea_publish_py.py, whose docstring gives the interface; the rules are those of
# tianwang.drivers.beidou.receiver (one fix per epoch from the better source, states FIX / DEGRADED /
# NO_FIX / STALE, a sky every `sky_decimation`-th epoch that had satellites). It runs once per epoch on
# every receiver, and once per epoch of a capture in `tianwang decode`, so the epochs of
# nmea_epoch.pxi and nmea_binary.pxi (included before this file) are read through their C fields.

from cpython.object cimport PyObject_GenericSetAttr

cdef str _FP_CHANNEL = "channel"
cdef str _FP_PAYLOAD = "payload"
cdef str _FP_TIME = "device_time_ns"


def _fp_plain_publication(cls):
    # True when `cls` is a dataclass of exactly (channel, payload, device_time_ns) whose __init__ is
    # the generated one and no __post_init__: building it is then object.__new__ and the three
    # object.__setattr__ calls that __init__ makes (a frozen dataclass's way), done here in C
    import dataclasses
    if not isinstance(cls, type) or not dataclasses.is_dataclass(cls) or hasattr(cls, "__post_init__"):
        return False
    if [f.name for f in dataclasses.fields(cls)] != [_FP_CHANNEL, _FP_PAYLOAD, _FP_TIME]:
        return False
    init = cls.__dict__.get("__init__")
    code = getattr(init, "__code__", None)
    # dataclasses compiles the __init__ it generates from a string
    return cls.__new__ is object.__new__ and code is not None and code.co_filename == "<string>"


cdef class FixPublisher:
    """Epochs -> publications for one receiver (see cext/nmea_publish_py.py). Raises ValueError for a
    protocol other than auto/nmea/casic/ubx."""

    def __init__(self, publication, epoch_type, frame_type, binary_epoch_type, binary, handlers, *,
                 hdop_limit, min_sats, sky_decimation, stale_ns, protocol):
        if protocol not in ("auto", "nmea", "casic", "ubx"):
            raise ValueError(f"protocol must be one of auto, nmea, casic, ubx, not {protocol!r}")
        self._publication = publication
        self._plain_publication = _fp_plain_publication(publication)
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
        self._last_epoch_device_ns = -1
        self._binary_keys = {}
        self._held = {}
        self._last_fix_ns = -1

    def process(self, items, now_ns, list pubs):
        """Publish what `items` (from EpochAssembler.push) hold, in stream order; returns None."""
        cdef object t
        cdef BinaryAssembler b
        cdef unsigned long long used
        for item in items:
            t = type(item)
            if t is self._epoch_type:
                self._epoch(item, now_ns, pubs)
            elif t is self._frame_type:
                b = self._binary.get(item.protocol)
                used = 0
                if b is not None:
                    used = b.messages
                    for e in b.push(item):
                        self._epoch(e, now_ns, pubs)
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

    def epoch(self, e, now_ns, list pubs):
        """Publish one epoch (after choosing the source, when binary assemblers are present)."""
        self._epoch(e, now_ns, pubs)

    def transition(self, state, reason, device_ns, list pubs):
        """A `state` publication, when `state` differs from the last one."""
        self._transition(state, reason, device_ns, pubs)

    cdef int _epoch(self, object e, object now_ns, list pubs) except -1:
        if self._binary:
            for c in self._select(e):
                self._publish(c, now_ns, pubs)
        else:
            self._publish(e, now_ns, pubs)
        return 0

    cdef object _new(self, str channel, object payload, long long device_ns):
        # self._publication(channel, payload, device_ns)
        cdef object pub
        if not self._plain_publication:
            return self._publication(channel, payload, device_ns)
        pub = object.__new__(self._publication)
        PyObject_GenericSetAttr(pub, _FP_CHANNEL, channel)
        PyObject_GenericSetAttr(pub, _FP_PAYLOAD, payload)
        PyObject_GenericSetAttr(pub, _FP_TIME, device_ns)
        return pub

    cdef int _transition(self, str state, object reason, long long device_ns, list pubs) except -1:
        if state == self.state:
            return 0
        pubs.append(self._new("state", {"state": state, "previous": self.state, "reason": reason}, device_ns))
        self.state = state
        return 0

    cdef int _publish(self, object e, object now_ns, list pubs) except -1:
        cdef long long device_ns, last
        cdef double hdop
        cdef int sats_used_total, mode
        cdef object no_fix_reason
        cdef bint has_satellites
        cdef str state
        cdef int s
        if type(e) is Epoch:
            device_ns = (<Epoch>e).time_ns
            hdop = (<Epoch>e).hdop
            sats_used_total = (<Epoch>e).sats_used_total
            mode = (<Epoch>e).mode
            no_fix_reason = (<Epoch>e).no_fix_reason
            has_satellites = bool((<Epoch>e)._gsv)
        elif type(e) is BinaryEpoch:
            device_ns = (<BinaryEpoch>e).time_ns
            hdop = (<BinaryEpoch>e).hdop
            sats_used_total = (<BinaryEpoch>e).sats_used_total
            mode = (<BinaryEpoch>e).mode
            no_fix_reason = (<BinaryEpoch>e).no_fix_reason
            has_satellites = False
            for s in range(NB_N_SYS):
                if (<BinaryEpoch>e)._view[s]:
                    has_satellites = True
        else:
            device_ns = e.time_ns
            hdop = e.hdop
            sats_used_total = e.sats_used_total
            mode = e.mode
            no_fix_reason = e.no_fix_reason
            has_satellites = e.has_satellites
        if device_ns < 0:
            device_ns = 0
        if now_ns is None:
            if device_ns:
                last = self._last_epoch_device_ns
                if last >= 0 and device_ns - last >= self.stale_ns:
                    self._transition("STALE", f"no epoch for {(device_ns - last) / 1e9:.1f} s", last + self.stale_ns,
                                     pubs)
                self._last_epoch_device_ns = device_ns
                self.device_ns = device_ns
        else:
            self.epoch_ns = now_ns
            if device_ns:
                self.device_ns = device_ns
        pubs.append(self._new("fix", e.fix_payload(), device_ns))
        if no_fix_reason is not None:
            state = "NO_FIX"
        elif hdop > self.hdop_limit or sats_used_total < self.min_sats:
            state = "DEGRADED"
        else:
            state = "FIX"
        if state != self.state:  # the reason is worded only when it is published
            if state == "NO_FIX":
                reason = no_fix_reason
            elif state == "FIX":
                reason = f"{mode}D fix, {sats_used_total} satellites"
            elif hdop > self.hdop_limit:
                reason = f"HDOP {hdop:g} over {self.hdop_limit:g}"
            else:
                reason = f"{sats_used_total} satellites used, fewer than {self.min_sats}"
            self._transition(state, reason, device_ns, pubs)
        if self.sky_decimation and has_satellites:
            if self._sky_count % self.sky_decimation == 0:
                pubs.append(self._new("sky", {"satellites": e.satellites()}, device_ns))
            self._sky_count += 1
        return 0

    cdef list _select(self, object e):
        # one fix per epoch when binary and NMEA both come: the epochs to publish now, oldest first
        cdef bint binary = type(e) is self._binary_epoch_type
        cdef list candidates, out
        cdef long long t
        if binary:
            if self.protocol != "auto" and self.protocol != e.source:
                self.superseded += 1
                return []
            # a source counts once two epochs in a row moved its clock on by a plausible period (a
            # stray frame with a good checksum is not a receiver sending binary); the first of the
            # two is held until then
            source = e.source
            last = self._binary_keys.get(source)
            self._binary_keys[source] = e.key
            held = self._held.pop(source, None)
            if last is None or not 0 < (e.key - last) % (1 << 32) <= 10000:
                if held is not None:
                    self.superseded += 1
                self._held[source] = e
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
            t = c.time_ns
            if t >= 0:
                if (binary or self._binary_seen) and t <= self._last_fix_ns:
                    self.superseded += 1
                    continue
                if t > self._last_fix_ns:
                    self._last_fix_ns = t
            out.append(c)
        return out
