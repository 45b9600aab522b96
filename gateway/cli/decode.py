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

import gc
import importlib
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, TextIO

from tianwang.gateway.errors import DriverError
from tianwang.gateway.framing import json_lines, json_lines_utf8

if TYPE_CHECKING:
    from tianwang.gateway.lifecycle.driver import Publication


class OfflineDecoder(Protocol):
    """A decoder, as the module docstring says."""

    family: str

    def feed(self, data: bytes) -> list[Publication]: ...

    def finish(self) -> list[Publication]: ...

    @property
    def frames(self) -> int: ...

    @property
    def dropped_bytes(self) -> int: ...

    @property
    def drops(self) -> dict[str, int]: ...


# Offline decoders of the built-in drivers, by `--driver` name: "module:factory(device_id)".
# Third-party drivers provide theirs through DriverSpec.decoder.
BUILTIN_DECODERS = {
    "beidou": "tianwang.drivers.beidou.decode:Decoder",
    "jt808": "tianwang.drivers.jt808.decode:Decoder",
    "signal": "tianwang.drivers.signal.decode:Decoder",
}

CHUNK = 1 << 16


class FramedDecoder:
    """Counters of a decoder built on a framer (`self.framer`, from tianwang.gateway.framing): frames and
    dropped bytes are the framer's; drops are the framer's reasons plus the decoder's own, counted
    with `_drop(reason)`. Subclasses add to `_extra_drops()` what else they drop."""

    framer: Any = None  # a framer of tianwang.gateway.framing (compiled or twin), set by the subclass

    def __init__(self) -> None:
        self._drops: dict[str, int] = {}

    @property
    def frames(self) -> int:
        return self.framer.frames

    @property
    def dropped_bytes(self) -> int:
        return self.framer.dropped_bytes

    @property
    def drops(self) -> dict[str, int]:
        out = {k: v for k, v in self.framer.drops.items() if v}
        for extra in (self._drops, self._extra_drops()):
            for reason, n in extra.items():
                if n:
                    out[reason] = out.get(reason, 0) + n
        return out

    def _extra_drops(self) -> dict[str, int]:
        return {}

    def _drop(self, reason: str) -> None:
        self._drops[reason] = self._drops.get(reason, 0) + 1


def make_decoder(driver: str, device_id: str, profile: str | None = None) -> OfflineDecoder:
    """The decoder for `driver` (with vendor `profile`, for decoders that take one). Raises
    DriverError when there is none, or when the profile is unknown or the decoder takes none."""
    where = BUILTIN_DECODERS.get(driver)
    if where is not None:
        module, attr = where.split(":")
        try:
            factory: Callable[..., OfflineDecoder] = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise DriverError(f"decoder for {driver!r} is not available: {exc}") from exc
        if profile is None:
            return factory(device_id)
        return _with_profile(driver, factory, device_id, profile)
    from tianwang.gateway.lifecycle.registry import default_registry

    spec = default_registry().get(driver)
    if spec is None or spec.decoder is None:
        known = sorted(set(BUILTIN_DECODERS) | {s.name for s in default_registry().specs() if s.decoder})
        raise DriverError(f"no offline decoder for driver {driver!r} (have: {', '.join(known)})")
    if profile is None:
        return spec.decoder(device_id)
    return _with_profile(driver, spec.decoder, device_id, profile)


def _with_profile(driver: str, factory: Callable[..., OfflineDecoder], device_id: str, profile: str) -> OfflineDecoder:
    import inspect

    try:
        takes = "profile" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes = False
    if not takes:
        raise DriverError(f"the {driver} decoder has no profiles (--profile is for drivers such as signal)")
    try:
        return factory(device_id, profile=profile)
    except (KeyError, ValueError) as exc:
        raise DriverError(f"unknown profile {profile!r} for {driver}: {exc}") from None


def run_decode(
    driver: str,
    device_id: str,
    infile: BinaryIO,
    outfile: TextIO,
    errfile: TextIO = sys.stderr,
    profile: str | None = None,
) -> int:
    """Decode everything from binary stream `infile`, write JSON lines to text stream `outfile`.

    Returns the process exit code: 0, or 2 when the decoder could not be created.
    """
    from tianwang.gateway.lifecycle.ids import DEVICE_ID_RE

    if not DEVICE_ID_RE.match(device_id or ""):
        print(
            f"tianwang decode: --id {device_id!r} is not a device id (it becomes one topic level: "
            "letters, digits and - _ . : only, at most 64)",
            file=errfile,
        )
        return 2
    try:
        decoder = make_decoder(driver, device_id, profile)
    except DriverError as exc:
        print(f"tianwang decode: {exc}", file=errfile)
        return 2
    prefix = f"{decoder.family}/{device_id}/"
    published = 0
    # a UTF-8 text stream over a binary one (what the CLI gives): the lines go to the binary stream
    # as bytes, which spares building a str and encoding it back
    raw = getattr(outfile, "buffer", None)
    encoding = (getattr(outfile, "encoding", None) or "").lower().replace("-", "").replace("_", "")
    write: Callable[[list[Publication]], object]
    if raw is not None and encoding == "utf8":
        outfile.flush()
        binary = raw

        def write(pubs: list[Publication]) -> object:
            return binary.write(json_lines_utf8(prefix, pubs))
    else:

        def write(pubs: list[Publication]) -> object:
            return outfile.write(json_lines(prefix, pubs))

    def emit(pubs: list[Publication]) -> None:
        nonlocal published
        if pubs:
            write(pubs)
            published += len(pubs)

    read = infile.read
    head = b""
    # Decoding makes no reference cycles (reference counting frees everything), and the cyclic
    # collector would otherwise walk every live object hundreds of times per million sentences.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        while True:
            chunk = read(CHUNK)
            if not chunk:
                break
            if not head:
                head = chunk[:4096]
            emit(decoder.feed(chunk))
        emit(decoder.finish())
        outfile.flush()
    except BrokenPipeError:
        # the reader went away (`tianwang decode ... | head`): stop there, quietly, as a pipeline
        # expects; what is still buffered goes nowhere rather than raising again at exit
        _discard_output(outfile)
        return 0
    finally:
        if gc_was_enabled:
            gc.enable()
    drops = ", ".join(f"{reason}={n}" for reason, n in sorted(decoder.drops.items()) if n)
    if drops:
        what = f"; drops: {drops}"
    elif decoder.dropped_bytes:
        what = " (bytes outside any frame: line noise, or another protocol)"
    else:
        what = ""
    print(
        f"tianwang decode: {decoder.frames} frames, {published} publications, "
        f"{decoder.dropped_bytes} bytes dropped{what}",
        file=errfile,
    )
    hint = suggest_driver(head, driver) if not published and head else None
    if hint:
        print(f"tianwang decode: {hint}", file=errfile)
    return 0


def _discard_output(outfile: TextIO) -> None:
    try:
        fd = outfile.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def suggest_driver(head: bytes, driver: str) -> str | None:
    """When nothing decoded: what the first bytes look like, if another driver reads them."""
    text_lines = head.count(b"\n")
    nmea = head.count(b"$G") + head.count(b"$B")
    flags = head.count(b"\x7e")
    guess = None
    if nmea >= 2 and text_lines >= 2:
        guess = "beidou"
    elif flags >= 2:
        # 0x7E-delimited frames: GB/T 20999 has a two-byte length and then its protocol version
        # (0x0100-0x0102); JT/T 808 starts with a message id (0x0xxx, 0x8xxx)
        first = head.index(b"\x7e")
        version = head[first + 3 : first + 5]
        guess = "signal" if version in (b"\x01\x00", b"\x01\x01", b"\x01\x02") else "jt808"
    if guess and guess != driver:
        return f"nothing decoded; the bytes look like {guess} data: try --driver {guess}"
    return None
