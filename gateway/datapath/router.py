"""The router: gives each reading its gateway-wide seq, encodes it once, appends it to the journal.

Payloads are msgpack maps. Encoding happens here, once per reading, whatever the number of
subscribers; fan-out only joins bytes.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgpack

from tianwang.gateway.errors import FrameError

if TYPE_CHECKING:
    from tianwang.gateway.datapath.journal import Journal

# An envelope must fit in one batch with room to spare (batches stay well under gRPC's 4 MiB).
MAX_PAYLOAD = 512 * 1024


def _msgpack_default(obj: Any) -> list[Any]:
    # tuples and sets as arrays; everything else is a driver bug and is refused
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot encode {type(obj).__name__} in a payload")


class Router:
    """Readings in, envelopes into the journal. Lives on the event loop thread.

    `publish(topic, device_id, payload, device_time_ns=0) -> seq` is the log's own (compiled)
    method: msgpack-encode, stamp the gateway time, encode the envelope, append, wake readers.
    It raises FrameError, counted in `rejected`, for a payload that cannot be encoded or is larger
    than MAX_PAYLOAD.
    """

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        log = journal.log
        log.pack = msgpack.Packer(use_bin_type=True, default=_msgpack_default).pack
        log.max_payload = MAX_PAYLOAD
        self._log = log
        self.publish = log.publish

    @property
    def rejected(self) -> int:
        return self._log.rejected

    def publish_packed(self, topic: str, device_id: str, packed: bytes, device_time_ns: int = 0) -> int:
        """Route a reading whose payload is already a msgpack map (replay, bridges)."""
        if self.journal.state == "failed":
            raise FrameError(f"{topic}: journal unwritable: {self.journal.error}")
        if len(packed) > MAX_PAYLOAD:
            raise FrameError(f"{topic}: payload of {len(packed)} bytes exceeds {MAX_PAYLOAD}")
        return self._log.append(topic, device_id, device_time_ns, time.time_ns(), packed)
