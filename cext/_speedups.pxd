# The contract of tianwang.cext._speedups: classes, their C fields and cdef signatures, one file per piece.
include "topics_decl.pxi"
include "envelope_decl.pxi"
include "journal_scan_decl.pxi"
include "frame7e_decl.pxi"
include "nmea_sentences_decl.pxi"
include "nmea_framer_decl.pxi"
include "nmea_epoch_decl.pxi"
include "jsonl_decl.pxi"
