"""`make up`: the whole stack in the foreground on embedded defaults.

Starts nats-server (JetStream, data under .pixq/nats), redis-server (AOF under .pixq/redis),
the API on API_HOST:API_PORT and N workers with local-filesystem storage under .pixq/storage.
Ctrl-C or SIGTERM stops every child (workers first, so they drain), then exits.
"""

import argparse
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pick_port(preferred: int, what: str) -> int:
    if port_free(preferred):
        return preferred
    port = free_port()
    print(f"pixq: port {preferred} is taken, {what} uses {port}", file=sys.stderr)
    return port


def wait_until(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise SystemExit(f"pixq: {what} did not come up within {timeout:.0f}s")


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


class Stack:
    """Children in start order; stopped workers first, then the API, then Redis and NATS."""

    def __init__(self, root: Path, workers: int, api_port: int) -> None:
        self.root = root
        self.workers = workers
        self.api_port = api_port
        self.children: list[tuple[str, subprocess.Popen]] = []

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.root / "logs" / f"{name}.log", "ab") if name in ("nats", "redis") else None
        process = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=log, stderr=log,
                                   start_new_session=True)
        self.children.append((name, process))
        return process

    def start(self) -> dict[str, str]:
        for sub in ("nats", "redis", "storage", "logs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        nats_port = pick_port(int(os.environ.get("PIXQ_DEV_NATS_PORT", 4222)), "nats-server")
        redis_port = pick_port(int(os.environ.get("PIXQ_DEV_REDIS_PORT", 6379)), "redis-server")
        self.spawn("nats", ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(nats_port),
                            "-sd", str(self.root / "nats"), "-m", "0"])
        self.spawn("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port),
                             "--dir", str(self.root / "redis"), "--appendonly", "yes", "--save", ""])
        wait_until(lambda: listening(nats_port), "nats-server")
        wait_until(lambda: listening(redis_port), "redis-server")
        env = {"NATS_URL": f"nats://127.0.0.1:{nats_port}", "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
               "STORAGE_TYPE": os.environ.get("STORAGE_TYPE", "local"),
               "STORAGE_DIR": os.environ.get("STORAGE_DIR", str(self.root / "storage")),
               "API_HOST": os.environ.get("API_HOST", "127.0.0.1"), "API_PORT": str(self.api_port)}
        if not os.environ.get("URL_SIGNING_KEY"):
            key_file = self.root / "url-signing-key"
            if not key_file.exists():
                key_file.write_text(os.urandom(32).hex())
            env["URL_SIGNING_KEY"] = key_file.read_text().strip()
        if not os.environ.get("WEBHOOK_SECRETS"):
            # Webhooks are signed, never sent unsigned: a local secret lets callback_url work here.
            secret_file = self.root / "webhook-secret"
            if not secret_file.exists():
                secret_file.write_text("whsec_" + base64.b64encode(os.urandom(32)).decode())
            env["WEBHOOK_SECRETS"] = secret_file.read_text().strip()
        bindir = Path(sys.executable).parent
        self.spawn("api", [str(bindir / "pixq-api")], env)
        for index in range(self.workers):
            metrics_port = pick_port(9091 + index, f"worker {index + 1} metrics")
            self.spawn(f"worker-{index + 1}", [str(bindir / "pixq-worker")], {**env, "METRICS_PORT": str(metrics_port)})
        wait_until(lambda: http_ok(f"http://127.0.0.1:{self.api_port}/health/ready"), "pixq-api")
        return env

    STOP_WAIT_SECONDS = 40.0
    """Longest a stage may take after SIGTERM before its processes are killed."""

    def stop(self) -> None:
        """SIGTERM in stages, as a rollout would: every worker at once (each drains within
        WORKER_SHUTDOWN_GRACE), then the API, then Redis and NATS. Each stage is timed on
        stderr, so a slow shutdown says which process held it up."""
        workers = [child for child in self.children if child[0].startswith("worker-")]
        api = [child for child in self.children if child[0] == "api"]
        rest = [child for child in reversed(self.children) if child not in workers and child not in api]
        for stage in (workers, api, *[[child] for child in rest]):
            running = [(name, process) for name, process in stage if process.poll() is None]
            for _, process in running:
                process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            for name, process in running:
                try:
                    process.wait(timeout=max(0.0, started + self.STOP_WAIT_SECONDS - time.monotonic()))
                except subprocess.TimeoutExpired:
                    print(f"pixq: {name} did not stop within {self.STOP_WAIT_SECONDS:g}s; killing it",
                          file=sys.stderr, flush=True)
                    process.kill()
                    process.wait()
                print(f"pixq: {name} stopped in {time.monotonic() - started:.1f}s (exit {process.returncode})",
                      file=sys.stderr, flush=True)

    def watch(self) -> int:
        """Block until a signal arrives or a child dies; returns the exit status for make."""
        while True:
            for name, process in self.children:
                if process.poll() is not None:
                    print(f"pixq: {name} exited with {process.returncode}; stopping the stack", file=sys.stderr)
                    return 1
            time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=int(os.environ.get("PIXQ_DEV_WORKERS", 2)))
    parser.add_argument("--root", type=Path, default=Path(os.environ.get("PIXQ_DEV_DIR", ".pixq")))
    args = parser.parse_args()
    for binary in ("nats-server", "redis-server"):
        if shutil.which(binary) is None:
            raise SystemExit(f"pixq: {binary} is not installed (make up installs it: redis with apt, nats-server into .venv)")
    api_port = int(os.environ.get("API_PORT", 8080))
    stack = Stack(args.root.resolve(), args.workers, api_port)

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    # SIGINT too, explicitly: a process started with SIGINT ignored (anything launched from a
    # non-interactive shell's background job inherits that) keeps ignoring it otherwise, and
    # Ctrl-C would never stop the stack.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    status = 0
    try:
        stack.start()
        print(f"""
pixq is up: API on http://127.0.0.1:{api_port}, {args.workers} workers, storage in {args.root}/storage.
Try:
  curl -s -F file=@tests/fixtures/sharp/2569067123_aca715a2ee_o.jpg -F width=512 -F height=512 \\
       http://127.0.0.1:{api_port}/api/v1/resize
  curl -s http://127.0.0.1:{api_port}/api/v1/jobs/<job_id>        # then curl -o out.jpg "<result.url>"
or with the CLI: .venv/bin/pixq submit resize IMAGE --width 512 --wait --output out.jpg
Ctrl-C stops everything.
""", flush=True)
        status = stack.watch()
    except KeyboardInterrupt:
        print("\npixq: stopping", file=sys.stderr)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
    sys.exit(status)


if __name__ == "__main__":
    main()
