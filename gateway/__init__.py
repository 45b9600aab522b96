"""The gateway core, in three rooms and three shared modules.

- `datapath/`  router, journal, fan-out (the gRPC service), auth, metrics
- `lifecycle/` config, driver registry, driver API, supervisor
- `cli/`       the `tianwang` command, top, demo, simulate, decode
- `app.py`     the process: wires config, journal, router, supervisor, gRPC server and metrics
- `errors.py`  the one exception hierarchy
- `framing.py` the switch between the compiled hot path (`tianwang.cext`) and its twins

Driver authors import from `tianwang.drivers.sdk`, not from here: everything in this package may
change without notice.
"""
