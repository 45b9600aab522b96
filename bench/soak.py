"""A bounded soak: the gateway as a process, fed by every installed driver's demo simulators at
demo rates, with a durable journal, a subscriber that disconnects and resumes at random moments,
and a config reload every `--reload-s`. It fails (exit 1) on any lost or repeated seq, any Gap, a
gateway that dies, or RSS growth past the limit after warm-up, and prints its figures.

    python bench/soak.py [--duration 600] [--reload-s 60] [--rss-growth-mib 64] [--json FILE]
    make soak                       # 10 minutes; SOAK_S=120 make soak for two

The simulators run in this process, the gateway in its own (`tianwang run -c FILE`), so the
gateway's RSS is the gateway's alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import yaml

TOKEN_ENV = "TIANWANG_SOAK_TOKEN"


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Subscriber:
    """Reads everything (`#`), checks that seqs follow one another across every reconnect, and
    disconnects at random moments, resuming from its Position."""

    def __init__(self, addr: str, token: str, rng: random.Random):
        self.addr = addr
        self.token = token
        self.rng = rng
        self.received = 0
        self.reconnects = 0
        self.problems: list[str] = []
        self.gaps = 0
        self.stop = threading.Event()
        self.position = None

    def run(self):
        from tianwang.v1 import client

        self.position = client.Position()
        expected = None
        while not self.stop.is_set():
            session_end = time.monotonic() + self.rng.uniform(1.0, 15.0)
            try:
                with grpc.insecure_channel(self.addr) as ch:
                    it = client.subscribe(
                        ch, ["#"], token=self.token, from_seq=1, position=self.position, max_delay_ms=20
                    )
                    try:
                        for item in it:
                            if isinstance(item, client.Gap):
                                self.gaps += 1
                                self.problems.append(f"gap {item.from_seq}..{item.to_seq} ({item.reason})")
                                expected = item.to_seq + 1
                                continue
                            seq = item["seq"]
                            if expected is not None and seq != expected:
                                kind = "repeated" if seq < expected else "lost"
                                self.problems.append(f"{kind} seq: expected {expected}, got {seq}")
                            expected = seq + 1
                            self.received += 1
                            if time.monotonic() > session_end or self.stop.is_set():
                                break
                    finally:
                        it.close()
            except grpc.RpcError as exc:
                if not self.stop.is_set():
                    self.problems.append(f"subscribe failed: {exc.code().name}: {exc.details()}")
                    time.sleep(1.0)
            if not self.stop.is_set():
                self.reconnects += 1
                time.sleep(self.rng.uniform(0.0, 2.0))


async def soak(args) -> dict:
    from tianwang.gateway.lifecycle.registry import default_registry

    rng = random.Random(args.seed)
    token = secrets.token_urlsafe(24)
    work = Path(tempfile.mkdtemp(prefix="tianwang-soak-"))
    figures: dict = {"duration_s": args.duration, "reload_every_s": args.reload_s}
    async with contextlib.AsyncExitStack() as stack:
        registry = default_registry()
        devices, listeners, families = [], [], []
        for spec in registry.specs():
            if spec.demo is not None:
                part = await spec.demo(stack)
                devices += part.get("devices", [])
                listeners += part.get("listeners", [])
                families.append(spec.name)
        figures["families"] = families
        config = {
            "gateway": {
                "name": "soak",
                "listen": "127.0.0.1:0",
                "metrics": None,
                "journal": {"path": str(work / "journal"), "max_bytes": "64MiB", "fsync": "batch"},
            },
            # the simulators' generated camera passwords and JT/T 808 secret are written into this
            # temporary file, which only the soak reads
            "auth": {
                "allow_inline_secrets": True,
                "tokens": [{"name": "soak", "token_env": TOKEN_ENV, "read": ["#"], "control": ["#"]}],
            },
            "devices": devices,
            "listeners": listeners,
        }
        path = work / "soak.yaml"
        path.write_text(yaml.safe_dump(config))
        env = dict(os.environ, **{TOKEN_ENV: token})
        proc = subprocess.Popen(
            [sys.executable, "-m", "tianwang", "run", "-c", str(path)],
            stdout=subprocess.PIPE,
            stderr=open(work / "gateway.log", "wb"),
            env=env,
        )
        stack.callback(lambda: proc.poll() is None and proc.kill())
        loop = asyncio.get_running_loop()
        line = await loop.run_in_executor(None, proc.stdout.readline)
        if not line:
            raise SystemExit(f"soak: the gateway did not start; see {work / 'gateway.log'}")
        addr = json.loads(line)["listen"]
        print(
            f"soak: gateway pid {proc.pid} on {addr}, drivers {', '.join(families)}, {args.duration:.0f} s",
            file=sys.stderr,
        )

        sub = Subscriber(addr, token, rng)
        thread = threading.Thread(target=sub.run, daemon=True)
        thread.start()
        start = time.monotonic()
        warm_until = start + min(60.0, args.duration * 0.25)
        rss_samples = []
        baseline = None
        reloads = 0
        next_reload = start + args.reload_s
        while time.monotonic() - start < args.duration:
            await asyncio.sleep(1.0)
            if proc.poll() is not None:
                sub.problems.append(f"the gateway exited with {proc.returncode}")
                break
            rss = rss_kib(proc.pid)
            rss_samples.append(rss)
            if baseline is None and time.monotonic() >= warm_until:
                baseline = rss
            if time.monotonic() >= next_reload:
                next_reload += args.reload_s
                reloads += 1
                # a harmless change each time: a second token comes and goes
                cfg = dict(config)
                cfg["auth"] = {"allow_inline_secrets": True, "tokens": list(config["auth"]["tokens"])}
                if reloads % 2:
                    cfg["auth"]["tokens"].append(
                        {"name": f"extra-{reloads}", "token": secrets.token_urlsafe(24), "read": ["gnss/#"]}
                    )
                path.write_text(yaml.safe_dump(cfg))
                proc.send_signal(signal.SIGHUP)
            if int(time.monotonic() - start) % 30 == 0:
                print(
                    f"soak: {time.monotonic() - start:5.0f} s  received {sub.received:>9,}  reconnects {sub.reconnects:>4}"
                    f"  reloads {reloads:>3}  RSS {rss / 1024:7.1f} MiB  problems {len(sub.problems)}",
                    file=sys.stderr,
                )
        elapsed = time.monotonic() - start
        sub.stop.set()
        thread.join(20)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = await loop.run_in_executor(None, proc.wait, 10)
            except subprocess.TimeoutExpired:
                code = None
                sub.problems.append("the gateway did not stop within 10 s of SIGTERM")
            if code not in (0, None):
                sub.problems.append(f"the gateway exited with {code} on SIGTERM")
        log_text = (work / "gateway.log").read_text(errors="replace")
        if reloads and log_text.count("reloaded ") < reloads:
            sub.problems.append(f"{reloads} reloads sent, {log_text.count('reloaded ')} logged")
        end_rss = rss_samples[-1] if rss_samples else 0
        baseline = baseline or (rss_samples[0] if rss_samples else 0)
        growth_mib = (max(rss_samples[len(rss_samples) // 2 :] or [0]) - baseline) / 1024
        if growth_mib > args.rss_growth_mib:
            sub.problems.append(f"RSS grew {growth_mib:.1f} MiB after warm-up (limit {args.rss_growth_mib} MiB)")
        figures.update(
            elapsed_s=round(elapsed, 1),
            envelopes_received=sub.received,
            envelopes_per_s=round(sub.received / elapsed) if elapsed else 0,
            reconnects=sub.reconnects,
            reloads=reloads,
            gaps=sub.gaps,
            rss_start_mib=round((rss_samples[0] if rss_samples else 0) / 1024, 1),
            rss_after_warmup_mib=round(baseline / 1024, 1),
            rss_end_mib=round(end_rss / 1024, 1),
            rss_max_mib=round(max(rss_samples or [0]) / 1024, 1),
            rss_growth_after_warmup_mib=round(growth_mib, 1),
            problems=sub.problems[:20],
            problem_count=len(sub.problems),
            gateway_log=str(work / "gateway.log"),
        )
    return figures


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--duration",
        type=float,
        default=float(os.environ.get("SOAK_S", "600")),
        help="seconds (default 600, or SOAK_S)",
    )
    p.add_argument("--reload-s", type=float, default=60.0, help="seconds between reloads (default 60)")
    p.add_argument("--rss-growth-mib", type=float, default=64.0, help="allowed RSS growth after warm-up (default 64)")
    p.add_argument("--seed", type=int, default=None, help="random seed of the reconnects")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    if args.duration <= 0 or args.reload_s <= 0 or args.rss_growth_mib <= 0:
        p.error("--duration, --reload-s and --rss-growth-mib must be positive")
    import uvloop

    figures = uvloop.run(soak(args))
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    if not figures["problem_count"]:
        import shutil

        shutil.rmtree(Path(figures["gateway_log"]).parent, ignore_errors=True)
    if figures["problem_count"]:
        print(f"soak: the gateway's log is kept at {figures['gateway_log']}", file=sys.stderr)
        print(
            f"soak: FAILED with {figures['problem_count']} problems (first: {figures['problems'][0]})", file=sys.stderr
        )
        return 1
    print(
        f"soak: passed: {figures['envelopes_received']:,} envelopes in {figures['elapsed_s']} s, "
        f"{figures['reconnects']} reconnects, {figures['reloads']} reloads, none lost or repeated; "
        f"RSS {figures['rss_after_warmup_mib']} -> {figures['rss_end_mib']} MiB",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
