"""Traffic-signal controllers: GB/T 20999 (protocol.py, the message layer) and the offline decoder
for `tianwang decode --driver signal` (decode.py). Framing is `tianwang.gateway.framing.Gbt20999Framer`."""
