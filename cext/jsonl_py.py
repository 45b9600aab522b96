"""JSON lines for `tianwang decode`: pure-Python twin of the compiled `json_lines` in
`tianwang.cext._speedups` (cext/jsonl.pxi). Import it through `tianwang.gateway.framing`
(`from tianwang.gateway.framing import json_lines`).

One line per publication, `{"topic": prefix + channel, "device_time_ns": ..., "payload": ...}`,
written by the standard library's encoder as json.dumps(obj, separators=(",", ":"),
ensure_ascii=False) writes it, with NaN/infinity written as null and bytes as hex.
"""

from __future__ import annotations

import json
import math


def _json_default(obj):
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).hex()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def _clean(value):
    # JSON has no NaN/Infinity: write null, as gpsd does for fields it does not have
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_clean(v) for v in value]
    return value


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_json_default, allow_nan=False, ensure_ascii=False)


def json_lines(prefix: str, publications) -> str:
    """One JSON line per publication: {"topic": prefix + channel, "device_time_ns", "payload"}.

    The pure-Python twin of the compiled `json_lines` (tianwang.gateway.framing picks one): the standard
    library's encoder, NaN/infinity written as null, bytes as hex. Raises TypeError for values JSON
    cannot carry, ValueError for circular payloads.
    """
    encode = _ENCODER.encode
    out = []
    for pub in publications:
        obj = {"topic": prefix + pub.channel, "device_time_ns": pub.device_time_ns, "payload": pub.payload}
        try:
            out.append(encode(obj))
        except ValueError:  # NaN or infinity somewhere in the payload
            out.append(encode(_clean(obj)))
        out.append("\n")
    return "".join(out)


def json_lines_utf8(prefix: str, publications) -> bytes:
    """json_lines(prefix, publications) encoded in UTF-8, for writing to a binary stream without a
    text layer. Raises what json_lines raises, and UnicodeEncodeError for lone surrogates."""
    return json_lines(prefix, publications).encode("utf-8")
