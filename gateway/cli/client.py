"""The client verbs of `tianwang`: `subscribe`, `devices`, `command` (and a device's actions) and
`top`, each a gRPC client of a running gateway (or of NATS, for `subscribe --nats`). Imports are lazy
here too: grpc loads when a verb that needs it runs."""

from __future__ import annotations

import json
import os
import sys


def _rpc_error(exc, args=None) -> int:
    """One line for a failed call, saying what to do where the status alone would not."""
    code = exc.code().name if hasattr(exc, "code") else "ERROR"
    details = exc.details() if hasattr(exc, "details") else str(exc)
    addr = (getattr(args, "addr", None) or os.environ.get("TIANWANG_ADDR") or "127.0.0.1:50051") if args else None
    if code == "UNAVAILABLE" and addr:
        details = f"cannot reach the gateway at {addr} ({details}); is it running? (--addr or TIANWANG_ADDR)"
    elif code == "DEADLINE_EXCEEDED" and addr:
        details = f"no answer from the gateway at {addr} within {args.timeout:g} s ({details})"
    elif code == "UNAUTHENTICATED" and "missing 'authorization" in details:
        details = "no token: set TIANWANG_TOKEN or pass --token"
    elif code == "UNAUTHENTICATED" and details == "unknown token":
        details = "the gateway does not know this token (check TIANWANG_TOKEN or --token)"
    print(f"tianwang: {code}: {details}", file=sys.stderr)
    return 2


def _connect(args):
    from tianwang.v1 import client

    channel = client.open_channel(args.addr, ca=args.ca, cert=args.cert, key=args.key)
    _wait_ready(channel, args)
    return channel, client.stub(channel), client.auth_metadata(args.token)


class _Unreachable(Exception):
    pass


def _wait_ready(channel, args) -> None:
    """`--timeout`: wait that long for the gateway to answer before giving up (it may be starting)."""
    import grpc

    try:
        grpc.channel_ready_future(channel).result(timeout=args.timeout or None)
    except grpc.FutureTimeoutError:
        channel.close()
        addr = args.addr or os.environ.get("TIANWANG_ADDR") or "127.0.0.1:50051"
        raise _Unreachable(
            f"cannot reach the gateway at {addr} within {args.timeout:g} s; is it running? (--addr or TIANWANG_ADDR)"
        ) from None


def cmd_subscribe(args) -> int:
    if args.nats:
        return _subscribe_nats(args)
    if args.gateway or args.idle_exit or args.stream != "TIANWANG" or args.nats_token:
        print("tianwang subscribe: --stream, --gateway and --idle-exit go with --nats", file=sys.stderr)
        return 2
    import time

    import grpc

    from tianwang.v1 import client

    for pattern in args.topic:
        warning = _pattern_warning(pattern)
        if warning:
            print(f"tianwang subscribe: warning: {warning}", file=sys.stderr)
    addr = args.addr or os.environ.get("TIANWANG_ADDR") or "127.0.0.1:50051"
    write = sys.stdout.write
    position = client.Position(args.journal, args.from_seq)
    seen = 0
    announced = None
    delay = 0.5
    while True:
        channel = client.open_channel(args.addr, ca=args.ca, cert=args.cert, key=args.key)
        try:
            if not args.follow or announced is None:
                _wait_ready(channel, args)
            else:
                grpc.channel_ready_future(channel).result()  # --follow: wait as long as it takes
            batches = client.subscribe_batches(
                channel,
                args.topic,
                from_seq=position.next_seq,
                token=args.token,
                max_batch=args.max_batch,
                max_delay_ms=args.max_delay_ms,
                position=position,
            )
            try:
                for gap, envelopes in batches:
                    if announced != position.journal_id:
                        # on stderr, so stdout stays envelopes only: what a later --journal needs
                        print(f"subscribe: journal {position.journal_id}", file=sys.stderr)
                        announced = position.journal_id
                    delay = 0.5
                    if gap is not None:
                        write(
                            (
                                json.dumps({"gap": gap._asdict()})
                                if args.json
                                else f"GAP {gap.from_seq}..{gap.to_seq} ({gap.reason})"
                            )
                            + "\n"
                        )
                    for d in envelopes:
                        if args.json:
                            write(json.dumps(d, default=_json_default, ensure_ascii=False) + "\n")
                        else:
                            write(
                                f"{d['seq']} {d['topic']} {json.dumps(d['payload'], default=_json_default, ensure_ascii=False)}\n"
                            )
                        seen += 1
                        if args.count and seen >= args.count:
                            sys.stdout.flush()
                            return 0
                    sys.stdout.flush()
            finally:
                batches.close()
            why = "the gateway ended the stream (it is stopping or restarting)"
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or announced is None:
                return _rpc_error(exc, args)
            why = f"the connection to the gateway at {addr} was lost ({exc.details()})"
        finally:
            channel.close()
        resume = f"--from-seq {position.next_seq} --journal {position.journal_id}" if position.next_seq else ""
        if not args.follow:
            print(
                f"tianwang subscribe: {why} after {seen} envelopes; "
                + (f"resume with {resume}, or use --follow" if resume else "use --follow to wait for it"),
                file=sys.stderr,
            )
            return 1
        print(f"tianwang subscribe: {why}; reconnecting in {delay:.1f} s ({resume or 'live'})", file=sys.stderr)
        time.sleep(delay)
        delay = min(delay * 2, 10.0)


def _pattern_warning(pattern: str) -> str | None:
    """Why a pattern can match no topic of the contract (family/device/channel, 3 levels or more)."""
    levels = pattern.split("/")
    if "#" in levels or len(levels) >= 3:
        return None
    suggestion = "/".join(levels + ["#"])
    return (
        f"{pattern!r} has {len(levels)} level{'s' if len(levels) != 1 else ''} and topics have at least 3 "
        f"(family/device/channel): it matches nothing; did you mean {suggestion!r}?"
    )


def _subscribe_nats(args) -> int:
    """`subscribe --nats URL`: the same output, read from the bridge's JetStream stream."""
    import uvloop

    from tianwang.gateway.errors import TopicError
    from tianwang.gateway.framing import TopicFilter
    from tianwang.v1 import jetstream

    try:
        flt = TopicFilter(args.topic or ["#"])
    except TopicError as exc:
        print(f"tianwang: --topic: {exc}", file=sys.stderr)
        return 2
    write = sys.stdout.write
    nats_token = args.nats_token or os.environ.get("TIANWANG_NATS_TOKEN")

    async def run():
        seen = 0
        async for item in jetstream.read(
            args.nats,
            stream=args.stream,
            gateways=args.gateway,
            idle_timeout=args.idle_exit or None,
            **({"token": nats_token} if nats_token else {}),
        ):
            if isinstance(item, jetstream.Gap):
                g = item._asdict()
                write(
                    (
                        json.dumps({"gap": g})
                        if args.json
                        else f"GAP {item.gateway} {item.from_seq}..{item.to_seq} ({item.reason})"
                    )
                    + "\n"
                )
                continue
            if item["seq"] < args.from_seq or not flt.matches(item["topic"]):
                continue
            if args.json:
                write(json.dumps(item, default=_json_default, ensure_ascii=False) + "\n")
            else:
                write(
                    f"{item['seq']} {item['topic']} {json.dumps(item['payload'], default=_json_default, ensure_ascii=False)}\n"
                )
            sys.stdout.flush()
            seen += 1
            if args.count and seen >= args.count:
                return

    try:
        uvloop.run(run())
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # nats errors: no servers, no such stream, auth
        from tianwang.gateway.errors import describe

        print(f"tianwang: nats {', '.join(args.nats)}: {describe(exc)}", file=sys.stderr)
        return 1
    return 0


def _json_default(obj):
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj).hex()
    return str(obj)


def _fmt_age(ns: int) -> str:
    import time

    if not ns:
        return "never"
    age = max(0.0, time.time() - ns / 1e9)
    if age < 120:
        return f"{age:.1f}s ago"
    if age < 7200:
        return f"{age / 60:.0f}m ago"
    return f"{age / 3600:.1f}h ago"


def format_devices(devices) -> str:
    from tianwang.gateway.cli.tables import format_counters

    rows = [("ID", "FAMILY", "DRIVER", "STATE", "LAST SEEN", "ENVELOPES", "COUNTERS", "REASON")]
    for d in devices:
        rows.append(
            (
                d.id,
                d.family,
                d.driver,
                d.state,
                _fmt_age(d.last_seen_ns),
                str(d.counters.get("envelopes", 0)),
                format_counters(d.counters),
                d.reason,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    # the last column is not padded: one width fewer than columns
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows)


def cmd_devices(args) -> int:
    import grpc

    channel, stub, md = _connect(args)
    try:
        devices = list_all_devices(
            stub, md, args.timeout, family=args.family, state=args.state or "", id_prefix=args.id_prefix
        )
    except grpc.RpcError as exc:
        return _rpc_error(exc, args)
    finally:
        channel.close()
    if args.json:
        for d in devices:
            print(json.dumps(device_json(d), ensure_ascii=False))
    else:
        print(format_devices(devices))
    return 0


def list_all_devices(stub, md, timeout, limit=None, **filters) -> list:
    """Every device matching `filters` (ListDevicesRequest fields), page by page, in the gateway's
    order (family, listener, id); at most `limit` of them."""
    from tianwang.v1 import gateway_pb2 as pb

    out: list = []
    token = ""
    while True:
        size = min(5000, limit - len(out)) if limit else 5000
        reply = stub.ListDevices(
            pb.ListDevicesRequest(page_size=size, page_token=token, **filters), metadata=md, timeout=timeout
        )
        out.extend(reply.devices)
        token = reply.next_page_token
        if not token or (limit and len(out) >= limit):
            return out


def device_json(d) -> dict:
    """A `Device` message as typed JSON: numbers as numbers (protobuf's JSON gives 64-bit ones as text)."""
    return {
        "id": d.id,
        "family": d.family,
        "driver": d.driver,
        "state": d.state,
        "last_seen_ns": int(d.last_seen_ns),
        "reason": d.reason,
        "parent": d.parent,
        "info": dict(sorted(d.info.items())),
        "counters": {k: int(v) for k, v in sorted(d.counters.items())},
    }


def _parse_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def cmd_command(args) -> int:
    import grpc

    from tianwang.v1 import client, gateway_pb2 as pb

    if args.help_actions:
        return _device_actions(args)
    if not args.action:
        print("tianwang command: give an ACTION (or --help-actions to list what the device takes)", file=sys.stderr)
        return 2
    kv = {}
    for item in args.args:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"tianwang command: argument {item!r} is not key=value", file=sys.stderr)
            return 2
        kv[key] = _parse_value(value)
    channel, stub, md = _connect(args)
    req = pb.CommandRequest(
        device_id=args.device,
        action=args.action,
        args=client.pack_args(kv),
        reason=args.reason,
        timeout_ms=int(args.command_timeout * 1000),
    )
    try:
        reply = stub.SendCommand(req, metadata=md, timeout=max(args.timeout, args.command_timeout + 1))
    except grpc.RpcError as exc:
        return _rpc_error(exc, args)
    finally:
        channel.close()
    result = client.unpack(reply.result)
    if args.out:
        from tianwang.gateway.cli.tables import save_result_bytes

        try:
            result = save_result_bytes(result, args.out)
        except OSError as exc:
            print(f"tianwang command: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    out = {
        "ok": reply.ok,
        "code": reply.code,
        "message": reply.message,
        "result": result,
        "audit_seq": reply.audit_seq,
    }
    print(json.dumps(out, default=_json_default, ensure_ascii=False))
    if not args.out and isinstance(result, dict) and any(isinstance(v, (bytes, bytearray)) for v in result.values()):
        print(
            "tianwang command: the result carries bytes, printed as hex; --out FILE writes them to a file",
            file=sys.stderr,
        )
    return 0 if reply.ok else 1


def _watch_latest(channel, md):
    """A live Subscribe in a thread, keeping the newest envelope per family and channel for the
    view's "latest" section (it stays empty when the token may read nothing). The stream is one
    of the subscribers the view lists."""
    import threading

    import grpc

    from tianwang.gateway.cli.top import channel_key
    from tianwang.v1 import gateway_pb2 as pb

    latest: dict = {}
    call = channel.unary_stream(
        "/tianwang.v1.Gateway/Subscribe",
        request_serializer=pb.SubscribeRequest.SerializeToString,
        response_deserializer=pb.Batch.FromString,
    )(pb.SubscribeRequest(max_delay_ms=200), metadata=md)

    def run():
        try:
            for batch in call:
                for env in batch.envelopes:
                    latest[channel_key(env.topic)] = env
        except grpc.RpcError:
            pass  # the view goes on without the section (no read grant, or the gateway went away)

    threading.Thread(target=run, name="top-latest", daemon=True).start()
    return latest


def _device_actions(args) -> int:
    """`command DEVICE --help-actions`: the driver the gateway runs DEVICE with, and its actions."""
    import grpc

    from tianwang.gateway.lifecycle.registry import default_registry

    channel, stub, md = _connect(args)
    try:
        matches = [d for d in list_all_devices(stub, md, args.timeout, id_prefix=args.device) if d.id == args.device]
    except grpc.RpcError as exc:
        return _rpc_error(exc, args)
    finally:
        channel.close()
    if not matches:
        print(
            f"tianwang command: the gateway has no device {args.device!r} (or this token may not see it)",
            file=sys.stderr,
        )
        return 1
    dev = matches[0]
    spec = default_registry().get(dev.driver)
    where = f"terminal of listener {dev.parent}" if dev.parent else "device"
    print(f"{dev.id}: {dev.driver} {where}, {dev.state}")
    if spec is None:
        print(f"  (the {dev.driver} driver is not installed here, so its actions cannot be listed)")
        return 0
    print_actions(spec.actions)
    return 0


def print_actions(actions) -> None:
    """A driver's actions as `tianwang drivers` and `command DEVICE` list them: what each needs and its arguments."""
    for a in actions:
        needs = ["control grant" if a.needs_control else "read access"]
        if a.needs_reason:
            needs.append("--reason")
        print(f"  {a.name}  [{', '.join(needs)}]  {a.description}")
        for arg, text in a.args.items():
            print(f"      {arg}: {text}")


TOP_DEVICES = 20_000  # devices `top` reads each interval for the per-device rates


def cmd_top(args) -> int:
    import contextlib
    import signal
    import time

    import grpc

    from tianwang.gateway.cli.top import Keys, LiveScreen, TopView
    from tianwang.v1 import gateway_pb2 as pb

    channel, stub, md = _connect(args)
    view = TopView()
    first = args.once  # --once: a silent first sample, so the view's rates cover one interval
    latest = _watch_latest(channel, md)
    # SIGTERM leaves like `q`: the terminal is put back as it was
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        with (
            contextlib.nullcontext(Keys()) if args.once else Keys() as keys,
            LiveScreen(tty=False if args.once else None) as screen,
        ):
            while True:
                try:
                    stats = stub.GetStats(pb.GetStatsRequest(), metadata=md, timeout=args.timeout)
                    devices = list_all_devices(stub, md, args.timeout, limit=TOP_DEVICES)
                    if len(devices) >= TOP_DEVICES:
                        # more than the view reads: the ones not online may be past the limit; ask for those
                        ids = {d.id for d in devices}
                        devices += [
                            d
                            for state in ("CONNECTING", "DEGRADED", "OFFLINE")
                            for d in list_all_devices(stub, md, args.timeout, limit=16, state=state)
                            if d.id not in ids
                        ]
                except grpc.RpcError as exc:
                    return _rpc_error(exc, args)
                frame = view.frame(stats, devices, time.monotonic(), latest=dict(latest))
                if first:
                    first = False
                    time.sleep(args.interval)
                    continue
                screen.show(frame)
                if args.once or keys.wait(args.interval):
                    return 0
    except KeyboardInterrupt:
        return 0  # Ctrl-C: leave as `q` does
    finally:
        channel.close()
