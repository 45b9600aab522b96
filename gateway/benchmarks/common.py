"""What every measurement shares: the machine's description, repeated timing, child processes and
their CPU and memory from /proc, percentiles."""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    """The machine and build a result was measured on."""
    import tianwang
    from tianwang.gateway import framing

    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count() or 0,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "using_cext": bool(framing.USING_CEXT),
        "hot_path": "cext" if framing.USING_CEXT else "python",
        "why_not_compiled": framing.why_not_compiled() or "",
        "tianwang_version": tianwang.__version__,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


def timed(fn: Callable[[], object], repeats: int, warmup: int = 0) -> tuple[dict, object]:
    """Run `fn` warmup + repeats times (time.perf_counter): ({median_s, min_s, repeats}, last result)."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": len(times)}, result


def percentile(values, q: float):
    """The q-quantile (0..1) of `values` by nearest rank; None when there are none."""
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15)


def memory_kib(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0])
    return out


class Proc:
    """A child process whose first stdout line is JSON (`first`); its stderr goes to a file in
    `logdir` (a full pipe would stall it)."""

    def __init__(self, args, logdir, name, env, cwd=None):
        self.log = open(Path(logdir) / f"{name}.stderr", "w+")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=cwd, env=env)
        line = self.proc.stdout.readline()
        if not line:
            self.log.seek(0)
            tail = self.log.read()[-2000:]
            self.proc.wait()
            self.log.close()
            raise RuntimeError(f"{name} did not start: {tail}")
        self.first = json.loads(line)

    def stop(self, timeout=15.0) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.log.close()
        return out or ""
