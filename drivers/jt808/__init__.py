"""JT/T 808 vehicle terminals: a listener that terminals dial into over TCP (`listeners: - driver: jt808`).

Terminals publish under the `gnss` family (`gnss/<phone>/fix`, `/alarm`, `/health`), like BeiDou
receivers. `SPEC` is built on first use, so `tianwang decode --driver jt808` loads no pydantic.
"""


def __getattr__(name):
    if name == "SPEC":
        from tianwang.drivers.jt808.driver import SPEC

        globals()["SPEC"] = SPEC
        return SPEC
    raise AttributeError(f"module 'tianwang.drivers.jt808' has no attribute {name!r}")
