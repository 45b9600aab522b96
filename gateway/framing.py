"""The only module that knows `cext` exists.

It imports the compiled hot path (`cext._speedups`) unless `GATEWAY_NO_CEXT` is set, re-raises the
ImportError when `GATEWAY_REQUIRE_CEXT` is set, and otherwise falls back to the pure-Python twins.
Everything else imports hot-path names from here: `from gateway.framing import TopicFilter`.

`USING_CEXT` says which path runs; it is logged at start-up and shown in stats and bench output.
`compiled()` and `twins()` give each implementation as a namespace, for the twin tests and benches.
"""

import importlib
import os
import types

# Every compiled name and the pure-Python twin that behaves the same ("module:attribute").
# Twins live beside the code that uses them.
TWINS = {
    # topic matcher (gateway/topics_py.py)
    "TopicFilter": "gateway.topics_py:TopicFilter",
    "validate_topic": "gateway.topics_py:validate_topic",
    "validate_pattern": "gateway.topics_py:validate_pattern",
    "pattern_matches": "gateway.topics_py:pattern_matches",
    # envelope encoder and the journal's in-memory log (gateway/envelope_py.py)
    "EntryLog": "gateway.envelope_py:EntryLog",
    "encode_envelope": "gateway.envelope_py:encode_envelope",
    "encode_gap": "gateway.envelope_py:encode_gap",
    "count_envelopes": "gateway.envelope_py:count_envelopes",
    # 0x7E-delimited framers, encoders and their checksums (gateway/frame7e_py.py)
    "Jt808Framer": "gateway.frame7e_py:Jt808Framer",
    "Gbt20999Framer": "gateway.frame7e_py:Gbt20999Framer",
    "PmppFramer": "gateway.frame7e_py:PmppFramer",
    "encode_jt808": "gateway.frame7e_py:encode_jt808",
    "encode_gbt20999": "gateway.frame7e_py:encode_gbt20999",
    "encode_pmpp": "gateway.frame7e_py:encode_pmpp",
    "crc16_gbt20999": "gateway.frame7e_py:crc16_gbt20999",
    "crc16_ccitt_false": "gateway.frame7e_py:crc16_ccitt_false",
    "crc16_x25": "gateway.frame7e_py:crc16_x25",
    "xor_checksum": "gateway.frame7e_py:xor_checksum",
    # NMEA 0183 framer + decoder and its typed messages (drivers/beidou/nmea_py.py)
    "NmeaDecoder": "drivers.beidou.nmea_py:NmeaDecoder",
    "nmea_checksum": "drivers.beidou.nmea_py:nmea_checksum",
    "parse_nmea_sentence": "drivers.beidou.nmea_py:parse_nmea_sentence",
    "NMEA_DROP_REASONS": "drivers.beidou.nmea_py:NMEA_DROP_REASONS",
    "GGA": "drivers.beidou.nmea_py:GGA",
    "RMC": "drivers.beidou.nmea_py:RMC",
    "GSA": "drivers.beidou.nmea_py:GSA",
    "GSV": "drivers.beidou.nmea_py:GSV",
    "GLL": "drivers.beidou.nmea_py:GLL",
    "VTG": "drivers.beidou.nmea_py:VTG",
    "ZDA": "drivers.beidou.nmea_py:ZDA",
    "GST": "drivers.beidou.nmea_py:GST",
    "GNS": "drivers.beidou.nmea_py:GNS",
    "TXT": "drivers.beidou.nmea_py:TXT",
    "TXR": "drivers.beidou.nmea_py:TXR",
    "FKI": "drivers.beidou.nmea_py:FKI",
    "ICI": "drivers.beidou.nmea_py:ICI",
    "ICP": "drivers.beidou.nmea_py:ICP",
    "TCI": "drivers.beidou.nmea_py:TCI",
    "PWI": "drivers.beidou.nmea_py:PWI",
    "RawSentence": "drivers.beidou.nmea_py:RawSentence",
    "Epoch": "drivers.beidou.nmea_py:Epoch",
    "EpochAssembler": "drivers.beidou.nmea_py:EpochAssembler",
    # JSON lines for `tianwang decode` (compiled in cext/nmea.pxi; twin: the json module)
    "json_lines": "gateway.decode:json_lines",
}

_compiled_module = None
_import_error = None
if not os.environ.get("GATEWAY_NO_CEXT"):
    try:
        from cext import _speedups as _compiled_module
    except ImportError as exc:  # the extension was not built
        if os.environ.get("GATEWAY_REQUIRE_CEXT"):
            raise ImportError(
                "GATEWAY_REQUIRE_CEXT is set but cext._speedups cannot be imported "
                f"({exc}); build it with `pip install -e .` or `make install`"
            ) from exc
        _import_error = exc

USING_CEXT = _compiled_module is not None
IMPLEMENTATION = "cext" if USING_CEXT else "python"

_twins_ns = None


def twins():
    """The pure-Python twins, as a namespace with every name in `TWINS`."""
    global _twins_ns
    if _twins_ns is None:
        ns = types.SimpleNamespace(NAME="python")
        for name, where in TWINS.items():
            module, attr = where.split(":")
            setattr(ns, name, getattr(importlib.import_module(module), attr))
        _twins_ns = ns
    return _twins_ns


def compiled():
    """The compiled implementation as a namespace, or None when it is not in use."""
    if _compiled_module is None:
        return None
    ns = types.SimpleNamespace(NAME="cext")
    for name in TWINS:
        setattr(ns, name, getattr(_compiled_module, name))
    return ns


def implementations():
    """Every implementation available in this process: [compiled (if any), twins]."""
    impls = [twins()]
    c = compiled()
    if c is not None:
        impls.insert(0, c)
    return impls


def why_not_compiled():
    """A human-readable reason the twins are running, or None."""
    if USING_CEXT:
        return None
    if os.environ.get("GATEWAY_NO_CEXT"):
        return "GATEWAY_NO_CEXT is set"
    return f"cext._speedups not importable: {_import_error}"


def __getattr__(name):
    # Names resolve on first use (PEP 562) and are then cached as module globals. Being lazy keeps
    # the import order free: a twin's package may itself import from here while it loads.
    where = TWINS.get(name)
    if where is None:
        raise AttributeError(f"module 'gateway.framing' has no attribute {name!r}")
    if _compiled_module is not None:
        value = getattr(_compiled_module, name)
    else:
        module, attr = where.split(":")
        value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(TWINS))
