"""pixq-api and pixq-worker as real processes (end-to-end and fault tests)."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers import free_port

BIN = Path(sys.executable).parent


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def wait_http_ok(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http_status(url) == 200:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout}s")


@dataclass
class Proc:
    name: str
    process: subprocess.Popen
    log: Path
    metrics_url: str = ""

    def signal(self, sig: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        return self.process.wait(timeout=timeout)


@dataclass
class Stack:
    env: dict[str, str]
    tmp: Path
    api: Proc | None = None
    workers: list[Proc] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.env['API_PORT']}"

    def _spawn(self, name: str, script: str, env: dict[str, str]) -> Proc:
        log = self.tmp / f"{name}.log"
        with open(log, "ab") as handle:
            process = subprocess.Popen([str(BIN / script)], env=env, stdout=handle, stderr=subprocess.STDOUT)
        return Proc(name, process, log)

    def start_api(self) -> Proc:
        self.api = self._spawn("api", "pixq-api", self.env)
        wait_http_ok(f"{self.api_url}/health/ready")
        return self.api

    def start_worker(self, **extra_env: str) -> Proc:
        port = free_port()
        env = {**self.env, "METRICS_PORT": str(port), **extra_env}
        worker = self._spawn(f"worker-{len(self.workers) + 1}", "pixq-worker", env)
        worker.metrics_url = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{worker.metrics_url}/health/ready")
        self.workers.append(worker)
        return worker

    def stop(self) -> None:
        for proc in [*self.workers, *([self.api] if self.api else [])]:
            proc.signal(signal.SIGTERM)
        for proc in [*self.workers, *([self.api] if self.api else [])]:
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.process.kill()
                proc.wait()


def stack_env(nats_port: int, redis_port: int, tmp: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXQ_", "API_KEYS", "ADMIN_API_KEYS"))}
    env.update({"NATS_URL": f"nats://127.0.0.1:{nats_port}", "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
                "STORAGE_TYPE": "local", "STORAGE_DIR": str(tmp / "storage"), "API_HOST": "127.0.0.1",
                "API_PORT": str(free_port()), "URL_SIGNING_KEY": "e2e-signing-key", "LOG_LEVEL": "info",
                "MAX_RETRIES": "3", "RETRY_BACKOFF": "0s,500ms,1s", "ACK_WAIT": "5s", "JOB_TIMEOUT": "20s",
                "WORKER_SHUTDOWN_GRACE": "10s",
                # Tests poll faster than a client would; tests/test_rate_limits.py sets its own limits.
                "RATE_LIMIT": "off", "RATE_LIMIT_PER_IP": "off",
                # Fault tests resubmit identical "slow" jobs and expect libvips to run each
                # (tests/faults/test_graceful_shutdown.py); tests/test_reuse.py turns reuse on.
                "REUSE_OUTPUTS": "false"})
    env.update(overrides)
    return env
