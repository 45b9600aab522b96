"""NMEA and mixed NMEA + binary corpora, the timed decoders (compiled, twin, pynmea2, pynmeagps),
and the whole `tianwang decode --driver beidou` process against gpsd's `gpsdecode` per corpus shape.

The corpus shapes are built by beidou_corpora (`nmea`, `many`, `short`, `mixed-ubx`,
`mixed-casic`); SHAPES says how big each one's file is (add a shape there with one line).
"""

from __future__ import annotations

import io
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tianwang.gateway.benchmarks import beidou_corpora as bc

CHUNK = 64 * 1024

# the NMEA bench receiver (the `nmea` shape) and the mixed receivers, for the in-process benches
epoch_state = bc.nmea_state
WRITER = bc.NMEA_WRITER
MIXED_WRITER = bc.MIXED_WRITER
mixed_state = bc.mixed_state


def corpus_bytes(epochs: int) -> tuple[bytes, int]:
    """`epochs` epochs of the NMEA bench receiver: (bytes, sentences)."""
    return bc.corpus("nmea", epochs)


def write_nmea410_file(path, sentences: int) -> int:
    """Exactly `sentences` sentences of the NMEA bench receiver into `path`: the number written."""
    return bc.write_file("nmea", path, items=sentences)


def mixed_epoch_bytes(kind: str, k: int, rng: random.Random) -> tuple[bytes, int]:
    """Epoch k of a `casic` or `ubx` mixed receiver: (bytes, frames + sentences)."""
    return bc.epoch_bytes(f"mixed-{kind}", k, rng)


def mixed_corpus(kind: str, epochs: int) -> tuple[bytes, int]:
    return bc.corpus(f"mixed-{kind}", epochs, seed=kind)


def write_mixed_file(path, epochs: int, kind: str = "ubx") -> int:
    """`epochs` epochs of the mixed receiver into `path`: the frames + sentences written."""
    return bc.write_file(f"mixed-{kind}", path, epochs=epochs, seed=11)


def _items(shape):
    return lambda path, n: bc.write_file(shape, path, items=n)


# corpus shape -> (writer(path, n) -> items written, what n counts, n at full size)
SHAPES = {
    "nmea": (_items("nmea"), "sentences", 1_000_000),
    "many": (_items("many"), "sentences", 1_000_000),
    "short": (_items("short"), "sentences", 1_000_000),
    "mixed-ubx": (lambda path, n: write_mixed_file(path, n, "ubx"), "epochs", 50_000),
    "mixed-casic": (lambda path, n: write_mixed_file(path, n, "casic"), "epochs", 50_000),
}


# -- the timed decoders --------------------------------------------------------------------------
def chunks_of(data: bytes, chunk: int = CHUNK) -> list[bytes]:
    return [data[i : i + chunk] for i in range(0, len(data), chunk)]


def decode_typed(impl, chunks: list[bytes], binary: bool = False) -> int:
    """NmeaDecoder.feed of `impl` over `chunks`: the messages out."""
    dec = impl.NmeaDecoder(binary=True) if binary else impl.NmeaDecoder()
    feed = dec.feed
    n = 0
    for chunk in chunks:
        n += len(feed(chunk))
    return n + len(dec.finish())


def receiver_pipeline(impl, chunks: list[bytes]) -> int:
    """Decoder + epoch assembly + fix payloads (what the driver runs per receiver): the epochs."""
    dec, asm = impl.NmeaDecoder(), impl.EpochAssembler()
    epochs = 0
    for chunk in chunks:
        for item in asm.push(dec.feed(chunk)):
            item.fix_payload()
            epochs += 1
    return epochs + len(asm.flush(final=True))


def decode_pynmea2(data: bytes) -> int:
    import pynmea2

    parse = pynmea2.parse
    return sum(1 for line in data.decode("ascii").split("\r\n") if line and parse(line, check=True))


def decode_pynmeagps(data: bytes) -> int:
    import pynmeagps

    reader = pynmeagps.NMEAReader(io.BytesIO(data), validate=pynmeagps.VALCKSUM)
    return sum(1 for _raw, parsed in reader if parsed is not None)


def peer_versions() -> dict:
    """The peers present: pynmea2 and pynmeagps (their versions), gpsdecode (its path); None when absent."""
    import importlib.metadata

    out: dict[str, str | None] = {}
    for name in ("pynmea2", "pynmeagps"):
        try:
            __import__(name)
            out[name] = importlib.metadata.version(name)
        except (ImportError, importlib.metadata.PackageNotFoundError):
            out[name] = None
    out["gpsdecode"] = shutil.which("gpsdecode")
    return out


def best_of(argv, path, rounds: int = 3, cwd=None) -> tuple[list[float], str]:
    """Run `argv` with `path` on stdin `rounds` times: (wall seconds of each run, last stderr)."""
    times = []
    err = ""
    for _ in range(rounds):
        with open(path, "rb") as stdin:
            start = time.perf_counter()
            done = subprocess.run(argv, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd)
            times.append(time.perf_counter() - start)
        err = done.stderr.decode(errors="replace")
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited {done.returncode}: {err.strip()[-300:]}")
    return times, err


TIANWANG_DECODE = [sys.executable, "-m", "tianwang", "decode", "--driver", "beidou", "-"]


def decode_vs_gpsdecode(shape: str, n: int, workdir, rounds: int = 3) -> dict:
    """The whole `tianwang decode --driver beidou -` process against `gpsdecode` on a file of corpus
    `shape` with `n` items (SHAPES), best and median of `rounds` runs each."""
    import statistics

    exe = shutil.which("gpsdecode")
    if exe is None:
        raise FileNotFoundError("gpsdecode")
    writer, unit, _ = SHAPES[shape]
    path = Path(workdir) / f"{shape}.bin"
    items = writer(path, n)
    ours, summary = best_of(TIANWANG_DECODE, path, rounds)
    theirs, _ = best_of([exe], path, rounds)
    size = path.stat().st_size
    path.unlink()
    return {
        "shape": shape,
        "description": bc.DESCRIPTIONS[shape],
        "unit": unit,
        "n": n,
        "items": items,
        "bytes": size,
        "tianwang_s": min(ours),
        "tianwang_median_s": statistics.median(ours),
        "gpsdecode_s": min(theirs),
        "gpsdecode_median_s": statistics.median(theirs),
        "ratio": min(theirs) / min(ours),
        "summary": summary.strip()[:200],
    }
