"""`tianwang decode`: run a raw capture through a driver's decoding path offline, as gpsd's
gpsdecode does, writing one JSON object per publication:
`{"topic": ..., "device_time_ns": ..., "payload": {...}}`. Bytes in payloads are written as hex.
A summary of frames and drops by reason goes to stderr.

This path is kept light on purpose: it imports neither grpc nor the supervisor, so it starts fast.

A decoder is an object with `family` (first topic level), `feed(data: bytes) -> list[Publication]`,
`finish() -> list[Publication]` (flush what is pending at end of input), and counters `frames`
(int), `dropped_bytes` (int) and `drops` (dict reason -> count).
"""

from __future__ import annotations

import importlib
import json
import math
import sys

from gateway.errors import DriverError

# Offline decoders of the built-in drivers, by `--driver` name: "module:factory(device_id)".
# Third-party drivers provide theirs through DriverSpec.decoder.
BUILTIN_DECODERS = {
    "beidou": "drivers.beidou.decode:Decoder",
    "jt808": "drivers.beidou.jt808_decode:Decoder",
    "signal": "drivers.signal.decode:Decoder",
}

CHUNK = 1 << 20


def make_decoder(driver: str, device_id: str):
    """The decoder for `driver`. Raises DriverError when there is none."""
    where = BUILTIN_DECODERS.get(driver)
    if where is not None:
        module, attr = where.split(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise DriverError(f"decoder for {driver!r} is not available: {exc}") from exc
        return factory(device_id)
    from gateway.registry import default_registry

    spec = default_registry().get(driver)
    if spec is None or spec.decoder is None:
        known = sorted(set(BUILTIN_DECODERS) | {s.name for s in default_registry().specs() if s.decoder})
        raise DriverError(f"no offline decoder for driver {driver!r} (have: {', '.join(known)})")
    return spec.decoder(device_id)


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
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def run_decode(driver: str, device_id: str, infile, outfile, errfile=sys.stderr) -> int:
    """Decode everything from binary stream `infile`, write JSON lines to text stream `outfile`.

    Returns the process exit code: 0, or 2 when the decoder could not be created.
    """
    try:
        decoder = make_decoder(driver, device_id)
    except DriverError as exc:
        print(f"tianwang decode: {exc}", file=errfile)
        return 2
    prefix = f"{decoder.family}/{device_id}/"
    encoder = json.JSONEncoder(separators=(",", ":"), default=_json_default, allow_nan=False, ensure_ascii=False)
    encode = encoder.encode
    write = outfile.write
    published = 0

    def emit(pubs):
        nonlocal published
        if not pubs:
            return
        lines = []
        for pub in pubs:
            obj = {"topic": prefix + pub.channel, "device_time_ns": pub.device_time_ns, "payload": pub.payload}
            try:
                lines.append(encode(obj))
            except ValueError:  # NaN or infinity somewhere in the payload
                lines.append(encode(_clean(obj)))
        lines.append("")
        write("\n".join(lines))
        published += len(pubs)

    read = infile.read
    while True:
        chunk = read(CHUNK)
        if not chunk:
            break
        emit(decoder.feed(chunk))
    emit(decoder.finish())
    outfile.flush()
    drops = ", ".join(f"{reason}={n}" for reason, n in sorted(decoder.drops.items()) if n) or "none"
    print(
        f"tianwang decode: {decoder.frames} frames, {published} publications, "
        f"{decoder.dropped_bytes} bytes dropped; drops: {drops}",
        file=errfile,
    )
    return 0
