"""The driver SDK: everything a Tianwang driver imports, and the only part of the core it may rely on.

Built-in drivers (beidou, jt808, signal, onvif) and third-party ones take the same path: a package
that registers a `DriverSpec` through the `tianwang.drivers` entry-point group and imports the core
only from here. Every name below keeps its meaning across minor releases; everything else under
`tianwang.gateway` and `tianwang.cext` may change without notice. docs/drivers.md is the guide.

Names resolve on first use (PEP 562), so `from tianwang.drivers.sdk import FrameError` costs no
pydantic, grpc or compiled-extension import until a name that needs one is asked for: a driver's
offline decoder stays quick to start.

What a driver is
    DriverSpec, ActionSpec    the spec a driver registers (name, family, config model, factory,
                              transports, actions, decoder, simulator, demo part)
    Driver                    the base class the supervisor drives: `run()`, `close()`, `command()`
    DeviceContext             what the supervisor hands a driver: publish, set_health, set_info, ...
    Health                    CONNECTING ONLINE DEGRADED OFFLINE (DISABLED: listed, not run)
    Publication               (channel, payload, device_time_ns): what a sans-io protocol returns
Config helpers
    DeviceConfig, ListenerConfig   base models of a device / listener entry (id, driver, backoff, ...)
    Model, SecretsModel       frozen pydantic bases; SecretsModel resolves `*_env` / `*_file` secrets
    parse_url, parse_hostport `serial://...`, `tcp://host:port`, `HOST:PORT` with key-path errors
    serial_options            pyserial keyword arguments from a serial URL's query
    url_link_id               `serial:<port>` / `tcp:<host:port>`: the link a URL opens (check, sharding)
Errors (one hierarchy, each also its builtin)
    GatewayError, ConfigError, FrameError, DriverError, DeviceError, DeviceTimeout, CommandError,
    AuthenticationFailed      raise it when the device refuses the credentials: the retry waits minutes
    describe(exc)             "ExceptionName: text", for health reasons and logs
    redact(text)              `text` with the user information of every URL in it as `***`
Hot path (compiled or twin, as `framing` chose; see `framing.USING_CEXT`)
    Jt808Framer, Gbt20999Framer, PmppFramer, NmeaDecoder and every other name of
    `framing.TWINS`; `framing` itself, for code that takes an implementation namespace
Offline decoding and simulators
    FramedDecoder             counters of a `tianwang decode` decoder built on a framer
    serve_simulator, run_simulator   the `tianwang simulate KIND` contract (first JSON line, stats,
                              SIGTERM, final counters)
    PtyLine                   the device end of a pty for a simulator: raw, non-blocking, an
                              on-data callback, a UART-sized backlog with overrun counting, a link
State kept across restarts
    read_state_file, write_state_file   a versioned JSON file of one table: one-line errors naming
                              the file; written whole and atomically, mode 0600
    StateFile                 the base of a table kept in such a file: background writes, coalesced,
                              `on_write`, `flush()`, `pending`
    StateFileError            a state file that cannot be used (ValueError, one line)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> "module:attribute" (":" alone: the module itself)
_EXPORTS = {
    "DriverSpec": "tianwang.gateway.lifecycle.driver:DriverSpec",
    "ActionSpec": "tianwang.gateway.lifecycle.driver:ActionSpec",
    "Driver": "tianwang.gateway.lifecycle.driver:Driver",
    "Health": "tianwang.gateway.lifecycle.driver:Health",
    "Publication": "tianwang.gateway.lifecycle.driver:Publication",
    "DeviceContext": "tianwang.gateway.lifecycle.supervisor:DeviceContext",
    "DeviceConfig": "tianwang.gateway.lifecycle.config:DeviceConfig",
    "ListenerConfig": "tianwang.gateway.lifecycle.config:ListenerConfig",
    "Model": "tianwang.gateway.lifecycle.config:Model",
    "SecretsModel": "tianwang.gateway.lifecycle.config:SecretsModel",
    "parse_url": "tianwang.gateway.lifecycle.config:parse_url",
    "parse_hostport": "tianwang.gateway.lifecycle.config:parse_hostport",
    "serial_options": "tianwang.gateway.lifecycle.config:serial_options",
    "url_link_id": "tianwang.gateway.lifecycle.config:url_link_id",
    "GatewayError": "tianwang.gateway.errors:GatewayError",
    "ConfigError": "tianwang.gateway.errors:ConfigError",
    "FrameError": "tianwang.gateway.errors:FrameError",
    "DriverError": "tianwang.gateway.errors:DriverError",
    "DeviceError": "tianwang.gateway.errors:DeviceError",
    "DeviceTimeout": "tianwang.gateway.errors:DeviceTimeout",
    "AuthenticationFailed": "tianwang.gateway.errors:AuthenticationFailed",
    "CommandError": "tianwang.gateway.errors:CommandError",
    "describe": "tianwang.gateway.errors:describe",
    "redact": "tianwang.gateway.errors:redact",
    "framing": "tianwang.gateway.framing:",
    "FramedDecoder": "tianwang.gateway.cli.decode:FramedDecoder",
    "serve_simulator": "tianwang.gateway.cli.simulate:serve",
    "run_simulator": "tianwang.gateway.cli.simulate:run",
    "PtyLine": "tianwang.gateway.cli.ptyline:PtyLine",
    "StateFile": "tianwang.gateway.lifecycle.statefile:StateFile",
    "StateFileError": "tianwang.gateway.lifecycle.statefile:StateFileError",
    "read_state_file": "tianwang.gateway.lifecycle.statefile:read_state_file",
    "write_state_file": "tianwang.gateway.lifecycle.statefile:write_state_file",
}


def _hot_path_names() -> dict[str, str]:
    from tianwang.gateway import framing

    return framing.TWINS


def __getattr__(name: str) -> Any:
    where = _EXPORTS.get(name)
    if where is None:
        if name.startswith("__") or name not in _hot_path_names():
            raise AttributeError(f"module 'tianwang.drivers.sdk' has no attribute {name!r}")
        where = "tianwang.gateway.framing:" + name
    module, _, attr = where.partition(":")
    value = importlib.import_module(module)
    if attr:
        value = getattr(value, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_hot_path_names()))


# written out, so that static tools see the re-exports (tests/test_layout.py keeps it equal to _EXPORTS)
__all__ = [
    "ActionSpec",
    "AuthenticationFailed",
    "CommandError",
    "ConfigError",
    "DeviceConfig",
    "DeviceContext",
    "DeviceError",
    "DeviceTimeout",
    "Driver",
    "DriverError",
    "DriverSpec",
    "FrameError",
    "FramedDecoder",
    "GatewayError",
    "Health",
    "ListenerConfig",
    "Model",
    "PtyLine",
    "Publication",
    "SecretsModel",
    "StateFile",
    "StateFileError",
    "describe",
    "framing",
    "parse_hostport",
    "parse_url",
    "read_state_file",
    "redact",
    "run_simulator",
    "serial_options",
    "serve_simulator",
    "url_link_id",
    "write_state_file",
]

if TYPE_CHECKING:  # for editors and type checkers; at run time the names above resolve lazily
    from tianwang.gateway import framing
    from tianwang.gateway.cli.decode import FramedDecoder
    from tianwang.gateway.cli.ptyline import PtyLine
    from tianwang.gateway.cli.simulate import run as run_simulator, serve as serve_simulator
    from tianwang.gateway.errors import (
        AuthenticationFailed,
        CommandError,
        ConfigError,
        DeviceError,
        DeviceTimeout,
        DriverError,
        FrameError,
        GatewayError,
        describe,
        redact,
    )

    # hot-path names resolve through __getattr__ for any name of framing.TWINS; these are the ones
    # drivers import, re-exported explicitly (`X as X`) so type checkers give them their twins' types
    from tianwang.gateway.framing import (
        BinaryAssembler as BinaryAssembler,
        BinaryEpoch as BinaryEpoch,
        Gbt20999Framer as Gbt20999Framer,
        Jt808Framer as Jt808Framer,
        NmeaDecoder as NmeaDecoder,
        PmppFramer as PmppFramer,
        RawSentence as RawSentence,
        encode_gbt20999 as encode_gbt20999,
        encode_jt808 as encode_jt808,
        encode_pmpp as encode_pmpp,
        parse_nmea_sentence as parse_nmea_sentence,
    )
    from tianwang.gateway.lifecycle.config import (
        DeviceConfig,
        ListenerConfig,
        Model,
        SecretsModel,
        parse_hostport,
        parse_url,
        serial_options,
        url_link_id,
    )
    from tianwang.gateway.lifecycle.driver import ActionSpec, Driver, DriverSpec, Health, Publication
    from tianwang.gateway.lifecycle.statefile import StateFile, StateFileError, read_state_file, write_state_file
    from tianwang.gateway.lifecycle.supervisor import DeviceContext
