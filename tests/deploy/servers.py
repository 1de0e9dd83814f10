"""Run a rendered nats-server or redis-server on loopback for the auth tests.

The configs come from the rendered ConfigMaps; only what ties them to a pod is rewritten
(listen addresses, data and pid paths), and every rewrite must match, so a changed
manifest makes the test fail loudly instead of silently testing something else."""

import os
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path


def rewrite(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in text, f"rendered config no longer contains {old!r}"
        text = text.replace(old, new)
    return text


@contextmanager
def running(argv: list[str], port: int, log: Path, env: dict[str, str] | None = None, timeout: float = 15):
    """Start ``argv``, wait until 127.0.0.1:port accepts, stop it (by its own pid) on exit."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"{argv[0]} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{argv[0]} not listening on {port}:\n{log.read_text()[-3000:]}")
                time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
