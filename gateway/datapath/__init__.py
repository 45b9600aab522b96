"""The data path: every reading from a driver to every subscriber.

router (seq, topic, encode once) -> journal (the log subscribers read by cursor) -> fanout (the gRPC
service: Subscribe batches, ListDevices, SendCommand, GetStats), with auth (tokens and ACLs) in
front and metrics (Prometheus, read at scrape time) beside.
"""
