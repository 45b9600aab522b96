# cython: language_level=3
"""Tianwang's compiled hot path: one extension, one section per piece.

Each piece has a pure-Python twin that behaves identically (same results, same counters, same
exception classes); `tianwang.gateway.framing` chooses between them. Nothing here logs: it counts, and the
core reports. The declarations (the contract) are in _speedups.pxd and the *_decl.pxi files.
"""

include "topics.pxi"
include "envelope.pxi"
include "journal_scan.pxi"
include "frame7e.pxi"
include "nmea_sentences.pxi"
include "nmea_framer.pxi"
include "nmea_epoch.pxi"
include "nmea_binary.pxi"
include "nmea_publish.pxi"
include "jsonl.pxi"
