"""`tianwang record DEVICE --out FILE` and `tianwang replay FILE`.

record   asks a running gateway for one device's raw bytes (the Record RPC) and writes them, with
         their receive times, as a capture file (tianwang.gateway.cli.capture; docs/capture-format.md).
         The file is written under FILE.part (mode 0600: it may hold auth codes) and renamed when
         complete, so FILE is never half a capture.
replay   serves a capture's device-side bytes as a device: on a pty (`serial:///dev/pts/N`), on a TCP
         port the gateway connects to, or dialling a JT/T 808 listener (`--connect`), at the recorded
         pace times `--speed`. The first stdout line is one JSON object with `kind` and `url`, as
         `tianwang simulate` prints; the last is `{"final": counters}`.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import sys
import time

from tianwang.gateway.cli.capture import FROM_DEVICE, TO_DEVICE, CaptureError, CaptureWriter, read_capture_file

# a pty replay waits this long after its last byte before the line hangs up, so the reader has
# taken everything (closing the master discards what the slave has not read yet)
LINGER_S = 0.5


class ReplayError(Exception):
    """A replay that cannot go on: one line for the user."""


def _err(verb: str, text: str) -> int:
    print(f"tianwang {verb}: {text}", file=sys.stderr)
    return 2


# -- record ----------------------------------------------------------------------------------------
def cmd_record(args, connect, rpc_error) -> int:
    """`connect(args)` -> (channel, stub, metadata); `rpc_error(exc, args)` prints one line, returns 2."""
    import grpc

    from tianwang.v1 import gateway_pb2 as pb

    stopped_by = None
    call = None

    def on_signal(signum, frame):
        # Ctrl-C or SIGTERM: the call is cancelled and the capture completed with its end record
        # (never cut between two writes); before the call, the command just stops
        nonlocal stopped_by
        if call is None:
            raise KeyboardInterrupt
        stopped_by = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        call.cancel()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    out = args.out
    if os.path.isdir(out):
        return _err("record", f"--out {out} is a directory; give a file name")
    part = out + ".part"
    try:
        # mode 0600: a capture holds what topics do not (a JT/T 808 terminal's auth code, card ids);
        # a leftover .part with looser bits is tightened too
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        f = os.fdopen(fd, "wb")
    except OSError as exc:
        return _err("record", f"cannot write {out}: {exc.strerror or exc}")
    done = False
    try:
        channel, stub, md = connect(args)
        writer = None
        chunks = 0
        end = ""
        call = stub.Record(
            pb.RecordRequest(device_id=args.device, seconds=args.seconds or 0.0, max_bytes=args.max_bytes),
            metadata=md,
        )
        try:
            for msg in call:
                if writer is None:
                    if not msg.HasField("start"):
                        return _err("record", "the gateway's stream did not begin with the recording's start")
                    s = msg.start
                    header = {
                        "device_id": s.device_id,
                        "family": s.family,
                        "driver": s.driver,
                        "transport": s.transport,
                        "url": s.url,
                        "start_ns": s.start_ns,
                        "gateway": s.gateway,
                        "version": s.version,
                        "parent": s.parent,
                    }
                    if args.note:
                        header["note"] = args.note
                    writer = CaptureWriter(f, header)
                    print(
                        f"tianwang record: recording {s.device_id} ({s.driver}, {s.url or s.transport}) "
                        f"{f'for {args.seconds:g} s' if args.seconds else 'until Ctrl-C'}",
                        file=sys.stderr,
                    )
                    continue
                if msg.end:
                    end = msg.end
                    break
                if msg.data:
                    writer.add(msg.t_ns, TO_DEVICE if msg.direction == pb.TO_DEVICE else FROM_DEVICE, msg.data)
                    chunks += 1
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED or stopped_by is None:
                return rpc_error(exc, args)
            if writer is None:
                return 130
            end = f"stopped by {stopped_by}"
        finally:
            channel.close()
        if writer is None:
            return _err("record", "the gateway ended the stream before the recording started")
        if not end:
            end = "the gateway ended the stream"
        writer.close(end)
        f.close()
        os.replace(part, out)
        done = True
    except OSError as exc:
        return _err("record", f"cannot write {out}: {exc.strerror or exc}")
    finally:
        if not f.closed:
            f.close()
        if not done:
            try:
                os.unlink(part)
            except OSError:
                pass
    summary = {"out": out, "device_id": args.device, "records": writer.records, "bytes": writer.nbytes, "end": end}
    print(json.dumps(summary), flush=True)
    if not writer.nbytes:
        print(
            f"tianwang record: no bytes came from {args.device} while recording ({end}); is it connected?",
            file=sys.stderr,
        )
    return 0


# -- replay ----------------------------------------------------------------------------------------
class Replayer:
    """Writes a capture's device-side chunks to `write(data)` at the recorded pace / `speed`
    (0: at once), from where it stopped; counters in `sent`, `bytes`."""

    def __init__(self, records, speed: float):
        self.records = records  # (t_ns, data)
        self.speed = speed
        self.next = 0
        self.sent = 0
        self.bytes = 0

    @property
    def done(self) -> bool:
        return self.next >= len(self.records)

    async def play(self, write, alive=lambda: True) -> None:
        loop = asyncio.get_running_loop()
        if self.done:
            return
        t0 = self.records[self.next][0]
        started = loop.time()
        while not self.done and alive():
            t, data = self.records[self.next]
            if self.speed > 0:
                due = started + max(0, t - t0) / 1e9 / self.speed
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                    if not alive():
                        return
            write(data)
            self.next += 1
            self.sent += 1
            self.bytes += len(data)
            if self.speed <= 0 and self.sent % 64 == 0:
                await asyncio.sleep(0)


def _announce(line: dict) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


async def _replay_tcp(cap, rep: Replayer, host: str, port: int, stop: asyncio.Event, describe) -> None:
    finished = asyncio.Event()
    busy = False

    async def serve(reader, writer):
        nonlocal busy
        if busy or rep.done:
            writer.close()
            return
        busy = True
        try:
            await _play_over(rep, reader, writer, stop)
            if rep.done:
                finished.set()
        except (ConnectionError, OSError):
            pass
        finally:
            busy = False

    try:
        server = await asyncio.start_server(serve, host, port)
    except OSError as exc:
        raise ReplayError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    bound = server.sockets[0].getsockname()
    _announce(describe(f"tcp://{bound[0]}:{bound[1]}" if ":" not in bound[0] else f"tcp://[{bound[0]}]:{bound[1]}"))
    try:
        await _until(stop, finished)
    finally:
        server.close()


async def _play_over(rep: Replayer, reader, writer, stop: asyncio.Event) -> None:
    """Play the capture into one TCP connection until it is done, the peer goes away or `stop`;
    what the gateway writes back (polls, acks) is read and ignored, its EOF ends the play."""
    closed = asyncio.Event()

    async def drain_input():
        try:
            while await reader.read(65536):
                pass
        except (ConnectionError, OSError):
            pass
        closed.set()

    reading = asyncio.create_task(drain_input())
    try:
        await rep.play(writer.write, lambda: not closed.is_set() and not stop.is_set())
        if rep.done:
            await writer.drain()
    finally:
        reading.cancel()
        writer.close()


async def _replay_connect(cap, rep: Replayer, host: str, port: int, stop: asyncio.Event, describe) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        raise ReplayError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
    _announce(describe(f"tcp://{host}:{port}"))
    await _play_over(rep, reader, writer, stop)
    if not rep.done and not stop.is_set():
        raise ReplayError(f"{host}:{port} closed the connection after {rep.sent} of {len(rep.records)} chunks")


async def _replay_pty(cap, rep: Replayer, link: str | None, stop: asyncio.Event, describe) -> None:
    from tianwang.gateway.cli.ptyline import PtyLine, point_link

    # the slave is not kept open: reading the master then fails with EIO until a reader opens it;
    # what the gateway writes is read (and ignored) below, not through an on-data callback
    line = PtyLine(keep_slave=False)
    line.open()
    master = line.master
    if link:
        try:
            point_link(link, line.path)
        except OSError as exc:
            line.close()
            raise ReplayError(f"--link {link}: cannot make the link: {exc.strerror or exc}") from None
    _announce(describe(f"serial://{link or line.path}"))
    loop = asyncio.get_running_loop()

    def reader_present() -> bool:
        try:
            os.read(master, 65536)  # what the gateway writes is read and ignored
        except BlockingIOError:
            return True
        except OSError as exc:
            if exc.errno == errno.EIO:
                return False
            raise
        return True

    pending = bytearray()

    def write(data: bytes) -> None:
        pending.extend(data)
        flush()

    def flush() -> None:
        while pending:
            try:
                n = os.write(master, pending)
            except BlockingIOError:
                return
            del pending[:n]

    try:
        while not stop.is_set():
            while not reader_present() and not stop.is_set():
                await asyncio.sleep(0.02)
            if stop.is_set():
                break
            await rep.play(write, lambda: not stop.is_set() and reader_present())
            while pending and not stop.is_set():
                flush()
                await asyncio.sleep(0.01)
            if rep.done:
                # let the reader take what the pty still holds before the line hangs up
                deadline = loop.time() + LINGER_S
                while loop.time() < deadline and not stop.is_set():
                    await asyncio.sleep(0.02)
                break
    finally:
        line.close()
        if link:
            try:
                os.unlink(link)
            except OSError:
                pass


async def _until(stop: asyncio.Event, finished: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(finished.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


def cmd_replay(args) -> int:
    from tianwang.gateway.lifecycle.config import parse_hostport

    try:
        cap = read_capture_file(args.file)
    except CaptureError as exc:
        return _err("replay", str(exc))
    where: tuple[str, int] = ("127.0.0.1", 0)  # --tcp or --connect, when given
    for opt in ("tcp", "connect"):
        value = getattr(args, opt)
        if value is not None:
            try:
                where = parse_hostport(value)
            except ValueError as exc:
                return _err("replay", f"--{opt} {value}: {exc}")
    mode = "pty" if args.pty else "tcp" if args.tcp is not None else "connect" if args.connect is not None else None
    if mode is None:
        mode = "pty" if cap.header.get("transport") == "serial" else "tcp"
        if cap.header.get("parent"):
            return _err(
                "replay",
                f"{args.file} is a terminal of listener {cap.header['parent']}: terminals dial in, "
                "so give --connect HOST:PORT (the listener), or --tcp/--pty to serve it",
            )
        if mode == "tcp":
            where = ("127.0.0.1", 0)
    if args.link and mode != "pty":
        return _err("replay", "--link goes with --pty (a link to the pty)")
    records = cap.device_records()
    if not records:
        return _err(
            "replay", f"{args.file} holds no bytes from the device ({cap.trailer.get('end', '')}): nothing to replay"
        )
    rep = Replayer(records, args.speed)
    h = cap.header

    def describe(url: str) -> dict:
        return {
            "kind": "replay",
            "url": url,
            "device_id": h.get("device_id", ""),
            "driver": h.get("driver", ""),
            "chunks": len(records),
            "bytes": sum(len(d) for _, d in records),
            "seconds": round(cap.duration_s, 3),
            "speed": args.speed,
        }

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if mode == "pty":
            await _replay_pty(cap, rep, args.link, stop, describe)
        elif mode == "tcp":
            await _replay_tcp(cap, rep, where[0], where[1], stop, describe)
        else:
            await _replay_connect(cap, rep, where[0], where[1], stop, describe)

    started = time.monotonic()
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        return 130
    except ReplayError as exc:
        return _err("replay", str(exc))
    except OSError as exc:
        return _err("replay", f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}")
    _announce(
        {
            "final": {
                "chunks_sent": rep.sent,
                "bytes_sent": rep.bytes,
                "chunks": len(records),
                "done": rep.done,
                "seconds": round(time.monotonic() - started, 3),
            }
        }
    )
    return 0
