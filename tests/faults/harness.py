"""Fault-test harness: real pixq processes, awaiting events over HTTP with deadlines.

Nothing here sleeps to synchronise: every wait polls an observable (job status, /metrics,
/health, JetStream stream state, a process exit) until a deadline, and fails with what it saw.
"""

import asyncio
import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nats
import redis.asyncio as aioredis

from pixq import names
from tests.helpers import make_image
from tests.servers import free_port
from tests.stack import BIN, Proc, Stack, http_status

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PHASE = {"queued": 0, "processing": 1, "retrying": 2, "completed": 3, "failed": 3}
TERMINAL = {"completed", "failed"}
LONG_OUTAGES = os.environ.get("PIXQ_LONG_OUTAGES") == "1"
"""``make test-outages``: the fault tests' issue-length variants instead of `make test`'s short ones."""

# Job shapes, sized so a 2-core box runs the suite quickly (timings measured with VIPS_CONCURRENCY=1).
SIZES = {"small": 320, "medium": 3000, "slow": 6000}
SPECS = {
    "medium": {"steps": [{"op": "blur", "sigma": 30}], "variants": [{"name": "a", "format": "jpeg"}]},
    "slow": {"steps": [{"op": "blur", "sigma": 100}], "variants": [{"name": "a", "format": "jpeg"}]},
}
"""Job shapes, timed on 2 cores with VIPS_CONCURRENCY=1: small (resize of 320x240) takes a few
milliseconds; medium (3000x3000, blur 30) ~0.3 s, so jobs are in flight long enough to kill a
worker under them; slow (6000x6000, blur 100) ~3 s or more, a job still running when a signal or
JOB_TIMEOUT hits (libvips stops it at once when the attempt is cancelled)."""
MEDIUM_SPEC = SPECS["medium"]


@functools.cache
def image(kind: str) -> bytes:
    side = SIZES[kind]
    return make_image(side, side * 3 // 4 if kind == "small" else side)


async def wait_until(check: Callable[[], Awaitable[Any]], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval)


def worker_argv(shim: str | None = None) -> list[str]:
    """``pixq-worker``, or the same entry point behind a fault shim in tests/faults (no test hooks in prod code)."""
    if shim is None:
        return [str(BIN / "pixq-worker")]
    return [sys.executable, str(HERE / shim)]


@dataclass
class FaultStack(Stack):
    """Stack plus: several APIs, workers behind a shim, and start-up that waits for liveness only."""

    apis: list[Proc] = field(default_factory=list)
    spawned: int = 0

    def _spawn_argv(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        log = self.tmp / f"{name}.log"
        with open(log, "ab") as handle:
            process = subprocess.Popen(argv, env=env, stdout=handle, stderr=subprocess.STDOUT)
        return Proc(name, process, log)

    def spawn_worker(self, shim: str | None = None, wait: str | None = "ready", **extra_env: str) -> Proc:
        """Start a worker; ``wait`` is the health endpoint to await ('ready', 'live' or None)."""
        port = free_port()
        self.spawned += 1
        env = {**self.env, "METRICS_PORT": str(port), "PYTHONPATH": str(REPO), **extra_env}
        worker = self._spawn_argv(f"worker-{self.spawned}", worker_argv(shim), env)
        worker.metrics_url = f"http://127.0.0.1:{port}"
        self.workers.append(worker)
        if wait:
            wait_proc_http(worker, f"{worker.metrics_url}/health/{wait}")
        return worker

    def spawn_api(self, **extra_env: str) -> tuple[Proc, str]:
        port = free_port()
        env = {**self.env, "API_PORT": str(port), **extra_env}
        api = self._spawn_argv(f"api-{len(self.apis) + 1}", [str(BIN / "pixq-api")], env)
        url = f"http://127.0.0.1:{port}"
        api.metrics_url = url  # the API serves /metrics on its own port
        wait_proc_http(api, f"{url}/health/ready")
        self.apis.append(api)
        if self.api is None:
            self.api = api
        return api, url

    def stop(self) -> None:
        procs = [*self.workers, *self.apis]
        for proc in procs:
            proc.signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.process.kill()
                proc.wait()

    def logs(self) -> str:
        """Every process's log tail, for assertion messages."""
        out = []
        for proc in [*self.apis, *self.workers]:
            text = proc.log.read_text(errors="replace") if proc.log.exists() else ""
            out.append(f"--- {proc.name} (rc={proc.process.poll()}) ---\n" + "\n".join(text.splitlines()[-15:]))
        return "\n".join(out)


def wait_proc_http(proc: Proc, url: str, timeout: float = 30.0) -> None:
    """Process start-up (not test synchronisation): poll until ``url`` answers 200 or the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.process.poll() is not None:
            raise AssertionError(f"{proc.name} exited {proc.process.returncode} during start-up:\n"
                                 f"{proc.log.read_text(errors='replace')[-3000:]}")
        if http_status(url) == 200:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout}s")


# --- HTTP ------------------------------------------------------------------------


def pipeline_form(image: bytes, spec: dict) -> aiohttp.FormData:
    data = aiohttp.FormData()
    data.add_field("file", image, filename="in.jpg", content_type="application/octet-stream")
    data.add_field("spec", json.dumps(spec))
    return data


def resize_form(data: bytes, width: int = 64) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", data, filename="in.jpg", content_type="application/octet-stream")
    form.add_field("width", str(width))
    return form


async def submit(http: aiohttp.ClientSession, api_url: str, kind: str = "small",
                 headers: dict | None = None) -> tuple[int, dict]:
    """POST one job of a known shape; returns (HTTP status, body)."""
    if kind == "small":
        path, data = "/api/v1/resize", resize_form(image("small"))
    else:
        path, data = "/api/v1/jobs", pipeline_form(image(kind), SPECS[kind])
    async with http.post(api_url + path, data=data, headers=headers or {}) as response:
        try:
            body = await response.json()
        except (aiohttp.ContentTypeError, json.JSONDecodeError):
            body = {"raw": await response.text()}
        return response.status, body


async def accepted(http: aiohttp.ClientSession, api_url: str, kind: str = "small", **kwargs) -> str:
    status, body = await submit(http, api_url, kind, **kwargs)
    assert status == 202, (status, body)
    return body["job_id"]


async def get_status(http: aiohttp.ClientSession, api_url: str, job_id: str) -> dict | None:
    async with http.get(f"{api_url}/api/v1/jobs/{job_id}") as response:
        if response.status == 404:
            return None
        assert response.status == 200, (response.status, await response.text())
        return await response.json()


async def wait_job(http: aiohttp.ClientSession, api_url: str, job_id: str, statuses: set[str] = TERMINAL,
                   timeout: float = 30.0, where: Callable[[dict], bool] | None = None) -> dict:
    async def check():
        body = await get_status(http, api_url, job_id)
        if body and body["status"] in statuses and (where is None or where(body)):
            return body
        return None
    return await wait_until(check, timeout, f"job {job_id} in {statuses}")


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=3)) as response:
            return response.status, await response.json(content_type=None)
    except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError):
        return 0, None


async def metric(http: aiohttp.ClientSession, proc: Proc, name: str, labels: str = "") -> float | None:
    """One sample of a process's /metrics (``labels`` a substring of the label set), summed over
    its matching series; None if unreachable."""
    try:
        async with http.get(f"{proc.metrics_url}/metrics", timeout=aiohttp.ClientTimeout(total=2)) as response:
            text = await response.text()
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        return None
    total = None
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
        if match and labels in (match.group(1) or ""):
            total = (total or 0.0) + float(match.group(2))
    return total


class BackgroundLoop:
    """A task running ``_loop`` between ``start`` and ``stop`` (recorders, supervisors)."""

    _task: asyncio.Task | None = None

    async def _loop(self) -> None:
        raise NotImplementedError

    def start(self):
        self._task = asyncio.create_task(self._loop())
        return self

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


class StatusRecorder(BackgroundLoop):
    """Polls every job it is given and keeps each job's sequence of observed (status, attempts).

    ``assert_monotonic`` checks that no job was ever seen to move backwards: attempts never
    decrease, within an attempt the phase never decreases, and nothing follows a terminal status.
    """

    def __init__(self, http: aiohttp.ClientSession, api_url: str) -> None:
        self.http = http
        self.api_url = api_url
        self.seen: dict[str, list[tuple[float, str, int]]] = {}
        self._task: asyncio.Task | None = None

    def track(self, job_id: str) -> None:
        self.seen.setdefault(job_id, [])

    async def poll_once(self) -> None:
        async def one(job_id: str) -> None:
            try:
                body = await get_status(self.http, self.api_url, job_id)
            except (aiohttp.ClientError, asyncio.TimeoutError, AssertionError):
                return  # the API is down or answering 503: nothing observed
            if body is None:
                return
            history = self.seen[job_id]
            entry = (time.monotonic(), body["status"], int(body["attempts"]))
            if not history or history[-1][1:] != entry[1:]:
                history.append(entry)
        pending = [job for job, history in self.seen.items() if not history or history[-1][1] not in TERMINAL
                   or self.keep_polling_terminal]
        await asyncio.gather(*(one(job) for job in pending))

    keep_polling_terminal = True
    """Keep polling finished jobs too, so a regression (completed -> processing) would be seen."""

    async def _loop(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(0.05)

    def latest(self, job_id: str) -> tuple[str, int] | None:
        history = self.seen.get(job_id)
        return history[-1][1:] if history else None

    def all_in(self, statuses: set[str]) -> bool:
        return all(h and h[-1][1] in statuses for h in self.seen.values())

    async def wait_all(self, statuses: set[str], timeout: float) -> None:
        async def done():
            if self._task is None or self._task.done():
                await self.poll_once()
            return self.all_in(statuses)
        try:
            await wait_until(done, timeout, f"all {len(self.seen)} jobs in {statuses}")
        except AssertionError:
            stuck = {job: h[-1][1:] if h else None for job, h in self.seen.items() if not h or h[-1][1] not in statuses}
            raise AssertionError(f"{len(stuck)} jobs not in {statuses} after {timeout}s: {stuck}") from None

    def assert_monotonic(self) -> None:
        for job_id, history in self.seen.items():
            for (_, s1, a1), (_, s2, a2) in zip(history, history[1:]):
                assert s1 not in TERMINAL, f"{job_id} left terminal {s1} for {s2}: {history}"
                assert (a2, PHASE[s2]) > (a1, PHASE[s1]), f"{job_id} moved backwards: {history}"


# --- NATS / Redis ----------------------------------------------------------------


class JetStreamProbe:
    """A direct JetStream connection for reading stream state (and publishing raw messages)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.nc = None
        self.js = None

    async def __aenter__(self) -> "JetStreamProbe":
        self.nc = await nats.connect(f"nats://127.0.0.1:{self.port}", max_reconnect_attempts=-1,
                                     reconnect_time_wait=0.2, connect_timeout=2)
        self.js = self.nc.jetstream()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.nc.close()

    async def state(self, stream: str):
        return (await self.js.stream_info(stream)).state


async def redis_keys(port: int, pattern: str) -> list[str]:
    client = aioredis.Redis(port=port, decode_responses=True)
    try:
        return [key async for key in client.scan_iter(pattern)]
    finally:
        await client.aclose()


def job_keys_pattern() -> str:
    return names.job_key("*")


def input_files(tmp: Path) -> list[Path]:
    root = tmp / "storage"
    return sorted(p for p in root.rglob("*") if p.is_file() and "inputs" in p.relative_to(root).parts)


def exited(proc: Proc) -> Callable[[], Awaitable[int | None]]:
    async def check():
        code = proc.process.poll()
        return None if code is None else (code, )
    return check


def kill(proc: Proc) -> None:
    os.kill(proc.process.pid, signal.SIGKILL)
    proc.process.wait(timeout=10)


class SubmitLoad:
    """A stream of submits (each with its own Idempotency-Key) from ``concurrency`` tasks, for
    faults that must happen under load. Every answer is kept as (HTTP status, body, key); an
    accepted job is handed to ``recorder`` at once, so its statuses are watched through the fault.

    ``pause()`` waits for the submits in progress to finish and holds new ones (to cut a
    dependency between submits); ``resume()`` lets them go again."""

    def __init__(self, http: aiohttp.ClientSession, api_url: str, kind: str = "small", concurrency: int = 3,
                 recorder: StatusRecorder | None = None, pace: float = 0.0) -> None:
        self.http = http
        self.pace = pace
        """Seconds each submitter rests after an answer: sets the load's rate (at most
        concurrency / pace submits a second), so a test's job count stays small; no synchronisation."""
        self.api_url = api_url
        self.kind = kind
        self.concurrency = concurrency
        self.recorder = recorder
        self.outcomes: list[tuple[int, dict, str]] = []
        self._stop = asyncio.Event()
        self._gate = asyncio.Event()
        self._gate.set()
        self._busy = 0
        self._tasks: list[asyncio.Task] = []

    async def _submitter(self) -> None:
        while not self._stop.is_set():
            await self._gate.wait()
            if self._stop.is_set():
                return
            key = os.urandom(12).hex()
            self._busy += 1
            try:
                status, body = await submit(self.http, self.api_url, self.kind, headers={"Idempotency-Key": key})
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                status, body = -1, {"exception": repr(exc)}
            finally:
                self._busy -= 1
            self.outcomes.append((status, body, key))
            if status == 202 and self.recorder is not None:
                self.recorder.track(body["job_id"])
            if self.pace:
                try:
                    await asyncio.wait_for(self._stop.wait(), self.pace)
                except asyncio.TimeoutError:
                    pass

    def start(self) -> "SubmitLoad":
        self._tasks = [asyncio.create_task(self._submitter()) for _ in range(self.concurrency)]
        return self

    async def stop(self) -> None:
        self._stop.set()
        self._gate.set()
        await asyncio.gather(*self._tasks)

    async def pause(self, timeout: float = 30.0) -> None:
        self._gate.clear()
        await wait_until(lambda: asyncio.sleep(0, self._busy == 0), timeout, "submits in progress to finish")

    def resume(self) -> None:
        self._gate.set()

    def count(self, status: int) -> int:
        return sum(1 for outcome in self.outcomes if outcome[0] == status)

    async def wait_accepted(self, more: int, timeout: float, what: str) -> None:
        """Wait until ``more`` submits beyond those already answered were accepted."""
        target = self.count(202) + more
        await wait_until(lambda: asyncio.sleep(0, self.count(202) >= target), timeout,
                         f"{more} more submits accepted ({what}); answers so far: {self.answers()}")

    def answers(self) -> dict[int, int]:
        """How many submits got each HTTP status (-1: no HTTP answer)."""
        counts: dict[int, int] = {}
        for status, _, _ in self.outcomes:
            counts[status] = counts.get(status, 0) + 1
        return counts

    @property
    def jobs(self) -> list[str]:
        return [body["job_id"] for status, body, _ in self.outcomes if status == 202]

    @property
    def accepted_keys(self) -> list[str]:
        return [key for status, _, key in self.outcomes if status == 202]
