"""The router: gives each reading its gateway-wide seq, encodes it once, appends it to the journal.

Payloads are msgpack maps. Encoding happens here, once per reading, whatever the number of
subscribers; fan-out only joins bytes.
"""

from __future__ import annotations

import logging
import time

import msgpack

from gateway.errors import FrameError

log = logging.getLogger("tianwang.router")

# An envelope must fit in one batch with room to spare (batches stay well under gRPC's 4 MiB).
MAX_PAYLOAD = 512 * 1024


def _msgpack_default(obj):
    # tuples and sets as arrays; everything else is a driver bug and is refused
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot encode {type(obj).__name__} in a payload")


class Router:
    """Readings in, envelopes into the journal. Lives on the event loop thread."""

    def __init__(self, journal, clock=time.time_ns):
        self.journal = journal
        self._append = journal.append
        self._clock = clock
        self._pack = msgpack.Packer(use_bin_type=True, default=_msgpack_default).pack
        self.rejected = 0  # payloads refused (unencodable or oversize)

    def publish(self, topic: str, device_id: str, payload: dict, device_time_ns: int = 0) -> int:
        """Route one reading; return its seq. Raises FrameError when the payload cannot be encoded
        or is larger than MAX_PAYLOAD (counted in `rejected`)."""
        try:
            packed = self._pack(payload)
        except (TypeError, ValueError, OverflowError) as exc:
            self.rejected += 1
            raise FrameError(f"{topic}: payload cannot be encoded: {exc}") from exc
        if len(packed) > MAX_PAYLOAD:
            self.rejected += 1
            raise FrameError(f"{topic}: payload of {len(packed)} bytes exceeds {MAX_PAYLOAD}")
        return self._append(topic, device_id, device_time_ns, self._clock(), packed)

    def publish_packed(self, topic: str, device_id: str, packed: bytes, device_time_ns: int = 0) -> int:
        """Route a reading whose payload is already a msgpack map (replay, bridges)."""
        if len(packed) > MAX_PAYLOAD:
            self.rejected += 1
            raise FrameError(f"{topic}: payload of {len(packed)} bytes exceeds {MAX_PAYLOAD}")
        return self._append(topic, device_id, device_time_ns, self._clock(), packed)


def unpack_payload(payload: bytes):
    """Decode an envelope payload (for clients and tests)."""
    return msgpack.unpackb(payload, raw=False, strict_map_key=False)
