"""The only module that knows `cext` exists.

It imports the compiled hot path (`tianwang.cext._speedups`) unless `GATEWAY_NO_CEXT` is set,
re-raises the ImportError when `GATEWAY_REQUIRE_CEXT` is set, and otherwise falls back to the
pure-Python twins. Everything else imports hot-path names from here
(`from tianwang.gateway.framing import TopicFilter`; drivers through `tianwang.drivers.sdk`).

`USING_CEXT` says which path runs; it is logged at start-up and shown in stats and bench output.
`compiled()` and `twins()` give each implementation as a namespace, for the twin tests and benches.
"""

import importlib
import os
import types
from typing import TYPE_CHECKING, Any

# Every compiled name and the pure-Python twin that behaves the same ("module:attribute").
# Each piece of the hot path is cext/<piece>.pxi (compiled), cext/<piece>_decl.pxi (its contract)
# and cext/<piece>_py.py (its twin).
TWINS = {
    # topic matcher (cext/topics_py.py)
    "TopicFilter": "tianwang.cext.topics_py:TopicFilter",
    "validate_topic": "tianwang.cext.topics_py:validate_topic",
    "validate_pattern": "tianwang.cext.topics_py:validate_pattern",
    "pattern_matches": "tianwang.cext.topics_py:pattern_matches",
    # envelope encoder and the journal's in-memory log (cext/envelope_py.py)
    "EntryLog": "tianwang.cext.envelope_py:EntryLog",
    "encode_envelope": "tianwang.cext.envelope_py:encode_envelope",
    "encode_gap": "tianwang.cext.envelope_py:encode_gap",
    "count_envelopes": "tianwang.cext.envelope_py:count_envelopes",
    # reading entries back from a durable journal's segment blocks (cext/journal_scan_py.py)
    "scan_entries": "tianwang.cext.journal_scan_py:scan_entries",
    # 0x7E-delimited framers, encoders and their checksums (cext/frame7e_py.py)
    "Jt808Framer": "tianwang.cext.frame7e_py:Jt808Framer",
    "Gbt20999Framer": "tianwang.cext.frame7e_py:Gbt20999Framer",
    "PmppFramer": "tianwang.cext.frame7e_py:PmppFramer",
    "encode_jt808": "tianwang.cext.frame7e_py:encode_jt808",
    "encode_gbt20999": "tianwang.cext.frame7e_py:encode_gbt20999",
    "encode_pmpp": "tianwang.cext.frame7e_py:encode_pmpp",
    "crc16_gbt20999": "tianwang.cext.frame7e_py:crc16_gbt20999",
    "crc16_ccitt_false": "tianwang.cext.frame7e_py:crc16_ccitt_false",
    "crc16_x25": "tianwang.cext.frame7e_py:crc16_x25",
    "xor_checksum": "tianwang.cext.frame7e_py:xor_checksum",
    # NMEA 0183 framer: stream decoder, checksum, one-sentence parser (cext/nmea_framer_py.py)
    "NmeaDecoder": "tianwang.cext.nmea_framer_py:NmeaDecoder",
    "nmea_checksum": "tianwang.cext.nmea_framer_py:nmea_checksum",
    "parse_nmea_sentence": "tianwang.cext.nmea_framer_py:parse_nmea_sentence",
    "NMEA_DROP_REASONS": "tianwang.cext.nmea_framer_py:NMEA_DROP_REASONS",
    # NMEA 0183 typed sentences (cext/nmea_sentences_py.py)
    "GGA": "tianwang.cext.nmea_sentences_py:GGA",
    "RMC": "tianwang.cext.nmea_sentences_py:RMC",
    "GSA": "tianwang.cext.nmea_sentences_py:GSA",
    "GSV": "tianwang.cext.nmea_sentences_py:GSV",
    "GLL": "tianwang.cext.nmea_sentences_py:GLL",
    "VTG": "tianwang.cext.nmea_sentences_py:VTG",
    "ZDA": "tianwang.cext.nmea_sentences_py:ZDA",
    "GST": "tianwang.cext.nmea_sentences_py:GST",
    "GNS": "tianwang.cext.nmea_sentences_py:GNS",
    "TXT": "tianwang.cext.nmea_sentences_py:TXT",
    "TXR": "tianwang.cext.nmea_sentences_py:TXR",
    "FKI": "tianwang.cext.nmea_sentences_py:FKI",
    "ICI": "tianwang.cext.nmea_sentences_py:ICI",
    "ICP": "tianwang.cext.nmea_sentences_py:ICP",
    "TCI": "tianwang.cext.nmea_sentences_py:TCI",
    "PWI": "tianwang.cext.nmea_sentences_py:PWI",
    "RawSentence": "tianwang.cext.nmea_sentences_py:RawSentence",
    "BinaryFrame": "tianwang.cext.nmea_sentences_py:BinaryFrame",
    # NMEA epoch assembly (cext/nmea_epoch_py.py)
    "Epoch": "tianwang.cext.nmea_epoch_py:Epoch",
    "EpochAssembler": "tianwang.cext.nmea_epoch_py:EpochAssembler",
    # CASIC and UBX navigation messages -> epochs (cext/nmea_binary_py.py)
    "BinaryEpoch": "tianwang.cext.nmea_binary_py:BinaryEpoch",
    "BinaryAssembler": "tianwang.cext.nmea_binary_py:BinaryAssembler",
    # a BeiDou receiver's epochs -> fix, state and sky publications (cext/nmea_publish_py.py)
    "FixPublisher": "tianwang.cext.nmea_publish_py:FixPublisher",
    # JSON lines for `tianwang decode` (cext/jsonl_py.py: the standard library's json module)
    "json_lines": "tianwang.cext.jsonl_py:json_lines",
    "json_lines_utf8": "tianwang.cext.jsonl_py:json_lines_utf8",
}

if TYPE_CHECKING:
    # For type checkers and editors: each name has its twin's type, since the compiled piece behaves
    # the same (tests/test_layout.py keeps this list equal to TWINS). At run time the names resolve
    # lazily through __getattr__ below, to the compiled piece or the twin.
    from tianwang.cext.envelope_py import (
        EntryLog as EntryLog,
        count_envelopes as count_envelopes,
        encode_envelope as encode_envelope,
        encode_gap as encode_gap,
    )
    from tianwang.cext.frame7e_py import (
        Gbt20999Framer as Gbt20999Framer,
        Jt808Framer as Jt808Framer,
        PmppFramer as PmppFramer,
        crc16_ccitt_false as crc16_ccitt_false,
        crc16_gbt20999 as crc16_gbt20999,
        crc16_x25 as crc16_x25,
        encode_gbt20999 as encode_gbt20999,
        encode_jt808 as encode_jt808,
        encode_pmpp as encode_pmpp,
        xor_checksum as xor_checksum,
    )
    from tianwang.cext.journal_scan_py import scan_entries as scan_entries
    from tianwang.cext.jsonl_py import json_lines as json_lines, json_lines_utf8 as json_lines_utf8
    from tianwang.cext.nmea_binary_py import BinaryAssembler as BinaryAssembler, BinaryEpoch as BinaryEpoch
    from tianwang.cext.nmea_epoch_py import Epoch as Epoch, EpochAssembler as EpochAssembler
    from tianwang.cext.nmea_framer_py import (
        NMEA_DROP_REASONS as NMEA_DROP_REASONS,
        NmeaDecoder as NmeaDecoder,
        nmea_checksum as nmea_checksum,
        parse_nmea_sentence as parse_nmea_sentence,
    )
    from tianwang.cext.nmea_publish_py import FixPublisher as FixPublisher
    from tianwang.cext.nmea_sentences_py import (
        FKI as FKI,
        GGA as GGA,
        GLL as GLL,
        GNS as GNS,
        GSA as GSA,
        GST as GST,
        GSV as GSV,
        ICI as ICI,
        ICP as ICP,
        PWI as PWI,
        RMC as RMC,
        TCI as TCI,
        TXR as TXR,
        TXT as TXT,
        VTG as VTG,
        ZDA as ZDA,
        BinaryFrame as BinaryFrame,
        RawSentence as RawSentence,
    )
    from tianwang.cext.topics_py import (
        TopicFilter as TopicFilter,
        pattern_matches as pattern_matches,
        validate_pattern as validate_pattern,
        validate_topic as validate_topic,
    )

_compiled_module: types.ModuleType | None = None
_import_error: ImportError | None = None
if not os.environ.get("GATEWAY_NO_CEXT"):
    try:
        # the extension has no stub: its names are typed by the twins above
        from tianwang.cext import _speedups as _compiled_module  # type: ignore[attr-defined, no-redef]
    except ImportError as exc:  # the extension was not built
        if os.environ.get("GATEWAY_REQUIRE_CEXT"):
            raise ImportError(
                "GATEWAY_REQUIRE_CEXT is set but tianwang.cext._speedups cannot be imported "
                f"({exc}); build it with `pip install -e .` or `make install`"
            ) from exc
        _import_error = exc

USING_CEXT = _compiled_module is not None
IMPLEMENTATION = "cext" if USING_CEXT else "python"

_twins_ns: types.SimpleNamespace | None = None


def twins() -> types.SimpleNamespace:
    """The pure-Python twins, as a namespace with every name in `TWINS`."""
    global _twins_ns
    if _twins_ns is None:
        ns = types.SimpleNamespace(NAME="python")
        for name, where in TWINS.items():
            module, attr = where.split(":")
            setattr(ns, name, getattr(importlib.import_module(module), attr))
        _twins_ns = ns
    return _twins_ns


def compiled() -> types.SimpleNamespace | None:
    """The compiled implementation as a namespace, or None when it is not in use."""
    if _compiled_module is None:
        return None
    ns = types.SimpleNamespace(NAME="cext")
    for name in TWINS:
        setattr(ns, name, getattr(_compiled_module, name))
    return ns


def implementations() -> list[types.SimpleNamespace]:
    """Every implementation available in this process: [compiled (if any), twins]."""
    impls = [twins()]
    c = compiled()
    if c is not None:
        impls.insert(0, c)
    return impls


def why_not_compiled() -> str | None:
    """A human-readable reason the twins are running, or None."""
    if USING_CEXT:
        return None
    if os.environ.get("GATEWAY_NO_CEXT"):
        return "GATEWAY_NO_CEXT is set"
    return f"tianwang.cext._speedups not importable: {_import_error}"


def __getattr__(name: str) -> Any:
    # Names resolve on first use (PEP 562) and are then cached as module globals. Being lazy keeps
    # the import order free: a twin's package may itself import from here while it loads.
    where = TWINS.get(name)
    if where is None:
        raise AttributeError(f"module 'tianwang.gateway.framing' has no attribute {name!r}")
    if _compiled_module is not None:
        value = getattr(_compiled_module, name)
    else:
        module, attr = where.split(":")
        value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(TWINS))
