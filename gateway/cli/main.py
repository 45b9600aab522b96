"""`tianwang` command line (also `python -m tianwang`). Verbs and their contract: docs/contract.md.

Imports are per verb: `tianwang decode` must start fast and never loads grpc.
Exit codes: 0 success; 1 the thing checked or commanded failed (bad config, refused command);
2 usage, connection or server errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from tianwang.gateway.cli.client import (
    _connect,
    _rpc_error,
    _Unreachable,
    cmd_command,
    cmd_devices,
    cmd_subscribe,
    cmd_top,
    format_devices as format_devices,
    print_actions,
)


def _setup_logging(level: str) -> None:
    from tianwang.gateway.errors import RedactingFilter

    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:  # no URL credentials in any log line
        handler.addFilter(RedactingFilter())


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _log_level(text: str) -> str:
    if text.lower() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return text.lower()


def _interval(text: str) -> float:
    value = _seconds(text)
    if value < 0.2:
        raise argparse.ArgumentTypeError(f"{text} s would poll the gateway too often (at least 0.2 s)")
    return value


def _shard(text: str):
    from tianwang.gateway.lifecycle.config import parse_shard

    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _int_range(low: int, high: int):
    """An argparse type for a whole number in low..high: a usage error, not a traceback, otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range ({low} to {high})")
        return value

    return parse


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if value != value:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value


def _percent(text: str) -> float:
    value = _number(text, "a percentage")
    if not 0 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{text} is out of range (0 to 1000 %)")
    return value


def _scale(text: str) -> float:
    value = _number(text, "a number")
    if not 0.001 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text} is out of range (0.001 to 100)")
    return value


def _sections(known):
    """An argparse type for a comma-separated list of `known` names (kept in `known`'s order)."""

    def parse(text: str) -> tuple:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"{text!r}: sections are {', '.join(known)}")
        return tuple(n for n in known if n in names)

    return parse


def _uint(bits: int):
    """An argparse type for a field of the proto's uintN."""
    return _int_range(0, (1 << bits) - 1)


_positive_int = _int_range(1, 4096)


def _seconds(text: str) -> float:
    """An argparse type for a duration: seconds, not negative, that fit a uint32 of milliseconds."""
    value = _number(text, "a number of seconds")
    if not 0 <= value <= 4_294_967:
        raise argparse.ArgumentTypeError(f"{text} is out of range (0 to 4294967 s)")
    return value


def _positive_seconds(text: str) -> float:
    """A duration above 0 (`run --demo --seconds`, `record --seconds`): leave the option out for none."""
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} s: give a number of seconds above 0 (or leave --seconds out)")
    return value


def _speed(text: str) -> float:
    value = _number(text, "a number")
    if not 0 <= value <= 1e6:
        raise argparse.ArgumentTypeError(f"{text}: the speed is a factor from 0 (as fast as possible) up")
    return value


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--addr", default=None, help="gateway HOST:PORT (default $TIANWANG_ADDR or 127.0.0.1:50051)")
    p.add_argument("--token", default=None, help="bearer token (default $TIANWANG_TOKEN)")
    p.add_argument("--ca", default=None, help="CA certificate file: use TLS")
    p.add_argument("--cert", default=None, help="client certificate file (mTLS)")
    p.add_argument("--key", default=None, help="client key file (mTLS)")
    p.add_argument("--timeout", type=_seconds, default=10.0, help="seconds to wait for the gateway (default 10)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tianwang", description="Tianwang field gateway")
    parser.add_argument(
        "--log-level",
        type=_log_level,
        default=os.environ.get("TIANWANG_LOG_LEVEL", "info"),
        help="debug, info (default, or $TIANWANG_LOG_LEVEL), warning, error",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True

    p = sub.add_parser("run", help="run the gateway")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-c", "--config", help="config file (YAML)")
    src.add_argument("--demo", action="store_true", help="run on built-in simulators of every family")
    p.add_argument("--listen", help="override gateway.listen (HOST:PORT; port 0 picks one)")
    p.add_argument("--metrics", help="override gateway.metrics (HOST:PORT, or 'off')")
    p.add_argument("--quiet", action="store_true", help="with --demo: no live view on stdout")
    p.add_argument(
        "--seconds",
        type=_positive_seconds,
        metavar="S",
        help="with --demo: stop by itself after S seconds, cleanly, with exit 0 (default: run until q, Ctrl-C or SIGTERM)",
    )
    p.add_argument(
        "--shard",
        type=_shard,
        metavar="I/N",
        help="run only the devices and listeners of shard I of N (stable hash of the id); name <name>-I",
    )

    p = sub.add_parser("check", help="validate a config file")
    p.add_argument("file", help="the config file (YAML)")
    p.add_argument(
        "--shards",
        type=_positive_int,
        metavar="N",
        help="also show which of N shards owns each device, and the devices that share a link (kept together)",
    )

    p = sub.add_parser("subscribe", help="print envelopes as they arrive")
    _client_args(p)
    p.add_argument(
        "--topic",
        action="append",
        default=[],
        help="topic pattern (repeatable; MQTT + and #); default: everything the token may read",
    )
    p.add_argument("--from-seq", type=_uint(64), default=0, help="replay from this seq (0 = live only)")
    p.add_argument(
        "--journal",
        default="",
        metavar="ID",
        help="the journal id --from-seq refers to (printed by an earlier run); refused if the gateway's journal is another",
    )
    p.add_argument("--count", type=_uint(64), default=0, help="stop after this many envelopes (default 0: never)")
    p.add_argument(
        "--max-batch", type=_uint(32), default=0, help="envelopes per batch to ask for (default 0: the server's)"
    )
    p.add_argument(
        "--max-delay-ms",
        type=_uint(32),
        default=None,
        help="how long a batch may wait to fill (0 = no wait; default: the server's, no wait unless the site sets one)",
    )
    p.add_argument("--json", action="store_true", help="JSON lines with decoded payloads")
    p.add_argument(
        "--follow",
        action="store_true",
        help="when the gateway goes away, wait for it and resume where the stream stopped (same journal)",
    )
    p.add_argument(
        "--nats",
        action="append",
        default=[],
        metavar="URL",
        help="read the NATS JetStream stream the bridge writes instead of the gateway (repeatable: cluster URLs)",
    )
    p.add_argument("--stream", default="TIANWANG", help="with --nats: the stream (default TIANWANG)")
    p.add_argument(
        "--nats-token",
        default=None,
        metavar="TOKEN",
        help="with --nats: the NATS server's auth token (default $TIANWANG_NATS_TOKEN)",
    )
    p.add_argument(
        "--gateway", action="append", default=[], help="with --nats: only this gateway's envelopes (repeatable)"
    )
    p.add_argument(
        "--idle-exit", type=_seconds, default=0, metavar="S", help="with --nats: stop after S seconds without a message"
    )

    p = sub.add_parser("devices", help="list devices and their state")
    _client_args(p)
    p.add_argument("--family", default="", help="only this family (gnss, signal, camera...); default: all")
    p.add_argument(
        "--state",
        type=str.upper,
        choices=("CONNECTING", "ONLINE", "DEGRADED", "OFFLINE", "DISABLED"),
        help="only devices in this state",
    )
    p.add_argument("--id-prefix", default="", help="only devices whose id starts with this")
    p.add_argument("--json", action="store_true", help="one JSON object per device, typed, instead of the table")

    p = sub.add_parser("command", help="send a command to a device")
    _client_args(p)
    p.add_argument("device", help="the device id (a terminal: its phone number)")
    p.add_argument("action", nargs="?", help="the action; --help-actions lists what DEVICE takes")
    p.add_argument("args", nargs="*", metavar="key=value", help="arguments (values parsed as JSON when they can be)")
    p.add_argument("--reason", default="", help="why (recorded in the audit log; required for some actions)")
    p.add_argument(
        "--help-actions",
        action="store_true",
        help="ask the gateway which driver runs DEVICE and list that driver's actions, then exit",
    )
    p.add_argument("--command-timeout", type=_seconds, default=0, help="seconds the device gets (default: driver's)")
    p.add_argument(
        "--out",
        metavar="FILE",
        help="write the bytes a result carries (a camera snapshot's JPEG) to FILE instead of hex in the JSON",
    )

    p = sub.add_parser("top", help="live view of rates and device states")
    _client_args(p)
    p.add_argument("--interval", type=_interval, default=1.0, help="seconds between views (at least 0.2; default 1)")
    p.add_argument("--once", action="store_true", help="print one view and exit")

    p = sub.add_parser("drivers", help="list installed drivers")
    p.add_argument("--actions", action="store_true", help="also list each driver's actions: arguments, reason, grant")
    p.add_argument("name", nargs="?", help="only this driver")

    p = sub.add_parser("decode", help="decode a raw capture offline (like gpsdecode)")
    p.add_argument(
        "--driver",
        default=None,
        help="the driver whose decoder to use (`tianwang drivers` lists them); a capture of "
        "`tianwang record` defaults to its own driver",
    )
    p.add_argument(
        "--id",
        default=None,
        help="device id used in topics (default: the recorded device's id for a capture, else capture)",
    )
    p.add_argument(
        "--profile", default=None, help="the device's vendor profile, for drivers that have profiles (signal)"
    )
    p.add_argument("file", help="raw bytes or a `tianwang record` capture (found by its magic), or - for stdin")

    p = sub.add_parser("record", help="capture a device's raw bytes, with their times, from a running gateway")
    _client_args(p)
    p.add_argument("device", help="the device id (a JT/T 808 terminal: its phone number)")
    p.add_argument("--out", required=True, metavar="FILE", help="the capture file to write (docs/capture-format.md)")
    p.add_argument(
        "--seconds",
        type=_positive_seconds,
        default=None,
        metavar="S",
        help="how long to record (default: until Ctrl-C)",
    )
    p.add_argument(
        "--max-bytes",
        type=_int_range(0, 256 * 1024 * 1024),
        default=0,
        metavar="N",
        help="stop after N bytes of data (default 0: the gateway's limit, 64 MiB)",
    )
    p.add_argument("--note", default="", help="a note kept in the capture's header (what was going on)")

    p = sub.add_parser("replay", help="serve a capture as a device (pty or TCP) at the recorded pace")
    p.add_argument("file", help="a capture written by `tianwang record`")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--pty", action="store_true", help="serve it on a pty (default for serial captures)")
    where.add_argument(
        "--tcp",
        metavar="HOST:PORT",
        help="serve it on a TCP port (port 0 picks one; default for TCP captures: 127.0.0.1:0)",
    )
    where.add_argument(
        "--connect", metavar="HOST:PORT", help="dial HOST:PORT and send it there (a JT/T 808 terminal into a listener)"
    )
    p.add_argument("--link", metavar="PATH", help="with --pty: a symlink to the pty")
    p.add_argument(
        "--speed",
        type=_speed,
        default=1.0,
        metavar="X",
        help="X times the recorded pace (default 1; 0 = as fast as the reader takes it)",
    )

    p = sub.add_parser("discover", help="find ONVIF cameras by WS-Discovery")
    p.add_argument("--timeout", type=_seconds, default=3.0, help="seconds to collect answers (default 3)")
    p.add_argument("--address", default=None, help="probe this HOST (or HOST:PORT) directly instead of multicast")
    p.add_argument("--interface", default=None, help="local IPv4 address whose interface sends the multicast probe")
    p.add_argument("--json", action="store_true", help="one JSON object per camera")

    from tianwang.gateway.benchmarks import SECTIONS

    p = sub.add_parser("bench", help="benchmark this machine: results.json, report.md and plots")
    p.add_argument("--quick", action="store_true", help="small sizes: about a minute on two cores")
    p.add_argument(
        "--out",
        default="tianwang-bench",
        metavar="DIR",
        help="where results.json, report.md and the plots go (default ./tianwang-bench)",
    )
    p.add_argument(
        "--baseline", metavar="FILE", help="an earlier results.json: flag figures more than --threshold %% worse"
    )
    p.add_argument(
        "--threshold", type=_percent, default=10.0, metavar="PCT", help="regression threshold in percent (default 10)"
    )
    p.add_argument(
        "--sections",
        type=_sections(SECTIONS),
        default=SECTIONS,
        metavar="LIST",
        help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})",
    )
    p.add_argument(
        "--scale", type=_scale, default=1.0, metavar="F", help="multiply every count by F (0.001 to 100; default 1)"
    )

    p = sub.add_parser("simulate", help="run one device simulator standalone")
    p.add_argument("kind", help="onvif, signal, beidou, jt808 (whichever are installed)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="simulator options (see `tianwang simulate KIND --help`)")
    return parser


def main(argv=None) -> int:
    # `bench`, `replay` and the demo start processes while gRPC may be running in this one; they
    # exec at once, so gRPC's fork handlers (which can crash such a child before its exec) are off.
    # gRPC reads this when it starts, after this point: every grpc import in the CLI is lazy.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
    parser = build_parser()
    args = parser.parse_args(argv)
    verb = args.verb
    if verb == "decode":
        return cmd_decode(args)
    _setup_logging(args.log_level)
    handler = {
        "run": cmd_run,
        "check": cmd_check,
        "subscribe": cmd_subscribe,
        "devices": cmd_devices,
        "command": cmd_command,
        "top": cmd_top,
        "drivers": cmd_drivers,
        "simulate": cmd_simulate,
        "discover": cmd_discover,
        "record": cmd_record,
        "replay": cmd_replay,
        "bench": cmd_bench,
    }[verb]
    try:
        return handler(args)
    except _Unreachable as exc:
        print(f"tianwang: UNAVAILABLE: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # downstream closed (`tianwang subscribe | head`): not an error
        try:
            sys.stdout.close()
        except BrokenPipeError:
            pass
        return 0


# -- bench -------------------------------------------------------------------------------------
def cmd_bench(args) -> int:
    from tianwang.gateway.cli.bench import run_bench

    return run_bench(args)


# -- decode ------------------------------------------------------------------------------------
def cmd_decode(args) -> int:
    from tianwang.gateway.cli.capture import CaptureError, capture_or_raw
    from tianwang.gateway.cli.decode import run_decode

    name = "stdin" if args.file == "-" else args.file
    if args.file == "-":
        f = sys.stdin.buffer
    else:
        try:
            f = open(args.file, "rb")
        except OSError as exc:
            print(f"tianwang decode: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
            return 2
    out = open(sys.stdout.fileno(), "w", encoding="utf-8", buffering=1 << 20, closefd=False)
    try:
        # a capture of `tianwang record` (found by its magic) is decoded from its device-side bytes
        try:
            infile, capture = capture_or_raw(f, name)
        except CaptureError as exc:
            print(f"tianwang decode: {exc}", file=sys.stderr)
            return 2
        driver = args.driver
        if driver is None:
            if capture is None:
                print(
                    "tianwang decode: give --driver NAME (`tianwang drivers` lists them); only a capture of "
                    "`tianwang record` names its driver itself",
                    file=sys.stderr,
                )
                return 2
            driver = capture.header.get("driver") or ""
        device_id = args.id or (capture.header.get("device_id") if capture is not None else None) or "capture"
        return run_decode(driver, device_id, infile, out, profile=args.profile)
    finally:
        if f is not sys.stdin.buffer:
            f.close()
        try:
            out.flush()
        except BrokenPipeError:
            pass


# -- record and replay ---------------------------------------------------------------------------
def cmd_record(args) -> int:
    from tianwang.gateway.cli.record import cmd_record as run

    return run(args, _connect, _rpc_error)


def cmd_replay(args) -> int:
    from tianwang.gateway.cli.record import cmd_replay as run

    return run(args)


# -- check -------------------------------------------------------------------------------------
def cmd_check(args) -> int:
    from tianwang.gateway.errors import ConfigError, name_path
    from tianwang.gateway.lifecycle.config import load_config, warnings_for

    try:
        config = load_config(args.file)
    except ConfigError as exc:
        for line in exc.lines():
            print(line)
        for line in exc.warning_lines():
            print(f"warning: {line}", file=sys.stderr)
        return 1
    names = {f"devices[{i}]": d.id for i, d in enumerate(config.devices)}
    names.update({f"listeners[{i}]": d.id for i, d in enumerate(config.listeners)})
    for path, reason in warnings_for(config):
        print(f"warning: {name_path(path, names)}: {reason}", file=sys.stderr)
    uplinks = f", {len(config.uplinks)} uplinks" if config.uplinks else ""
    counts = f"{len(config.devices)} devices, {len(config.listeners)} listeners, {len(config.auth.tokens)} tokens"
    print(f"{args.file}: ok ({counts}{uplinks})")
    if args.shards:
        from tianwang.gateway.cli.tables import print_shards

        print_shards(config, args.shards)
    return 0


# -- run ---------------------------------------------------------------------------------------
def cmd_run(args) -> int:
    import uvloop

    from tianwang.gateway.errors import ConfigError, GatewayError

    if args.demo:
        from tianwang.gateway.cli.demo import run_demo

        if args.shard:
            print("tianwang run: --shard goes with -c FILE, not --demo", file=sys.stderr)
            return 2

        try:
            return uvloop.run(
                run_demo(listen=args.listen, metrics=args.metrics, live=not args.quiet, seconds=args.seconds)
            )
        except GatewayError as exc:
            print(f"tianwang: {exc}", file=sys.stderr)
            return 2

    from tianwang.gateway.app import Gateway, announce, hold_reloads
    from tianwang.gateway.lifecycle.config import load_config

    hold_reloads()  # a SIGHUP from here on (systemctl reload during start-up) is held, not fatal

    for flag, given in (("--seconds", args.seconds), ("--quiet", args.quiet)):
        if given:
            print(f"tianwang run: {flag} goes with --demo, not -c FILE", file=sys.stderr)
            return 2
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        return 1
    if args.metrics:
        metrics = None if args.metrics == "off" else args.metrics
        config = config.model_copy(update={"gateway": config.gateway.model_copy(update={"metrics": metrics})})
    if args.shard:
        from tianwang.gateway.lifecycle.config import for_shard

        config = for_shard(config, *args.shard)
    gw = Gateway(config, config_path=args.config, listen=args.listen, shard=args.shard)

    async def main():
        await gw.serve(ready=announce)

    try:
        uvloop.run(main())
    except GatewayError as exc:
        print(f"tianwang: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_drivers(args) -> int:
    from tianwang.gateway.lifecycle.registry import default_registry

    reg = default_registry()
    specs = [s for s in reg.specs() if args.name in (None, s.name)]
    if args.name and not specs:
        known = ", ".join(s.name for s in reg.specs()) or "none"
        print(f"tianwang drivers: no driver {args.name!r} (installed: {known})", file=sys.stderr)
        return 2
    if args.actions:
        for i, spec in enumerate(specs):
            if i:
                print()
            print(f"{spec.name} ({spec.family}, {spec.kind}): {spec.description}".rstrip(": "))
            print_actions(spec.actions)
            if not spec.actions:
                print("  (no actions)")
        return 1 if reg.errors else 0
    rows = [("DRIVER", "FAMILY", "KIND", "TRANSPORTS", "ACTIONS", "SIMULATOR")]
    for s in specs:
        rows.append(
            (
                s.name,
                s.family,
                s.kind,
                ",".join(s.transports) or "-",
                ",".join(a.name for a in s.actions) or "-",
                "yes" if s.simulator else "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip())
    for name, why in sorted(reg.errors.items()):
        print(f"{name}: failed to load: {why}", file=sys.stderr)
    return 1 if reg.errors else 0


def cmd_discover(args) -> int:
    """WS-Discovery probe (tianwang.drivers.onvif.discovery); one line per camera found."""
    import ipaddress

    import uvloop

    from tianwang.gateway.lifecycle.config import parse_hostport

    try:
        from tianwang.drivers.onvif.discovery import PORT, probe
    except ImportError as exc:
        print(f"tianwang discover: the onvif driver is not installed ({exc})", file=sys.stderr)
        return 2
    address, port = None, PORT
    if args.address:
        try:
            if ":" in args.address and args.address.count(":") == 1 or args.address.startswith("["):
                address, port = parse_hostport(args.address)
            else:
                address = args.address
        except ValueError as exc:
            print(f"tianwang discover: --address: {exc}", file=sys.stderr)
            return 2
    if args.interface:
        try:
            ipaddress.IPv4Address(args.interface)
        except ValueError:
            print(f"tianwang discover: --interface: {args.interface!r} is not an IPv4 address", file=sys.stderr)
            return 2
    if args.timeout <= 0 or args.timeout > 3600:
        print("tianwang discover: --timeout must be more than 0 and at most 3600 s", file=sys.stderr)
        return 2
    try:
        found = uvloop.run(probe(args.timeout, address, port, interface=args.interface))
    except OSError as exc:
        where = f"{address}:{port}" if address else "the multicast group"
        print(f"tianwang discover: cannot probe {where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    for m in found:
        if args.json:
            print(json.dumps(m.as_dict()))
        else:
            print(
                f"{m.address}  xaddrs={','.join(m.xaddrs) or '-'}  scopes={' '.join(m.scopes) or '-'}  endpoint={m.endpoint}"
            )
    if not args.json:
        print(f"{len(found)} camera(s) answered", file=sys.stderr)
    return 0


def cmd_simulate(args) -> int:
    import importlib

    from tianwang.gateway.lifecycle.registry import default_registry

    reg = default_registry()
    sims = {s.name: s.simulator for s in reg.specs() if s.simulator}
    # the superior platform of the gateway's uplinks (core, not a driver's)
    sims["gb28181-platform"] = "tianwang.gateway.uplink.platform_sim:main"
    where = sims.get(args.kind)
    if where is None:
        print(
            f"tianwang simulate: no simulator {args.kind!r} (have: {', '.join(sorted(sims)) or 'none'})",
            file=sys.stderr,
        )
        return 2
    module, func = where.split(":")
    return int(getattr(importlib.import_module(module), func)(args.rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
