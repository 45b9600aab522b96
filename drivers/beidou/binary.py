"""CASIC (ZKW AT6558 family: ATGM336H, Quectel L76K) and u-blox UBX navigation messages -> epochs.

The decoding lives in the hot path: `BinaryAssembler` and `BinaryEpoch` are the compiled ones
(cext/nmea_binary.pxi) or their pure-Python twins (cext/nmea_binary_py.py, which also records the
vendor-specification facts relied on), whichever the hot-path switch chose. This module keeps
the names where the driver code has always imported them from.

    a = BinaryAssembler("ubx")            # or "casic"
    epochs = a.push(frame)                # a BinaryFrame from NmeaDecoder(binary=True)
    epochs += a.flush(final=True)         # BinaryEpoch: fix_payload(), satellites(), ...
"""

from __future__ import annotations

from tianwang.drivers.sdk import BinaryAssembler, BinaryEpoch

__all__ = ["BinaryAssembler", "BinaryEpoch"]
