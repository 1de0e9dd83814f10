"""The mixed load of a chaos run, and what its clients saw.

Kinds (weights in MIX): a multipart resize, a resize by ``storage_key`` (objects seeded under
``seeds/`` before the run), a pipeline (multipart, two variants), a batch of storage_key items,
and a deliberately bad input (tests/fixtures/sharp/truncated.jpg: passes the submit-time sniff
or arrives unsniffed by storage_key, then fails INVALID_IMAGE in the worker). Every job id the
load was given is marked good or bad, so the invariants can tell a legitimate failure from a
lost good job.

A client behaves like pixq.client: each submit carries an Idempotency-Key, and a submit that got
no HTTP answer (the API was killed, a connection reset) is sent again with the same key to a
live API, up to RESENDS times, so a job accepted behind a lost answer is still known.

``StatusLog`` polls every known job and keeps each job's sequence of (status, attempts): the
evidence for "no status moved backwards".
"""

import asyncio
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.chaos.stack import Api, ChaosStack
from tests.faults.harness import BackgroundLoop
from tests.helpers import make_image

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
BAD_INPUT = (FIXTURES / "sharp" / "truncated.jpg").read_bytes()
GOOD_SEEDS = 4
SEED_KEYS = [f"seeds/good-{n}.jpg" for n in range(GOOD_SEEDS)]
BAD_SEED_KEY = "seeds/bad-truncated.jpg"
MIX = {"upload": 40, "storage_key": 20, "pipeline": 15, "batch": 10, "bad": 8}
PIPELINE_SPEC = {"steps": [{"op": "blur", "sigma": 2}],
                 "variants": [{"name": "a", "format": "jpeg"}, {"name": "b", "format": "webp"}]}
RESENDS = 3
PHASE = {"queued": 0, "processing": 1, "retrying": 2, "completed": 3, "failed": 3}
TERMINAL = {"completed", "failed"}


def seeds() -> dict[str, bytes]:
    objects = {key: make_image(320 + 16 * n, 240) for n, key in enumerate(SEED_KEYS)}
    objects[BAD_SEED_KEY] = BAD_INPUT
    return objects


@dataclass
class Submit:
    """One client request (with its resends): what was sent and what came back."""

    kind: str
    at: float
    """Seconds since the run started."""
    status: int = 0
    """The last HTTP status; -1 when no attempt got an HTTP answer."""
    jobs: list[tuple[str, bool]] = field(default_factory=list)
    """(job_id, bad input?) of every job the answer accepted."""
    resends: int = 0
    error: str = ""
    code: str = ""
    """The answer's ``error.code`` (e.g. STORAGE_UNAVAILABLE on a 503)."""


class StatusLog(BackgroundLoop):
    """Every known job's observed (time, status, attempts) sequence, from GET /api/v1/jobs/{id}."""

    def __init__(self, http: aiohttp.ClientSession, stack: ChaosStack, rng: random.Random) -> None:
        self.http = http
        self.stack = stack
        self.rng = rng
        self.seen: dict[str, list[tuple[float, str, int]]] = {}
        self.bad: dict[str, bool] = {}
        self.reads = 0
        self._task: asyncio.Task | None = None

    def track(self, job_id: str, bad: bool) -> None:
        self.seen.setdefault(job_id, [])
        self.bad[job_id] = bad

    def latest(self, job_id: str) -> str | None:
        history = self.seen.get(job_id)
        return history[-1][1] if history else None

    async def read(self, job_id: str) -> None:
        apis = self.stack.live_apis()
        if not apis:
            return
        api = self.rng.choice(apis)
        try:
            async with self.http.get(f"{api.url}/api/v1/jobs/{job_id}",
                                     timeout=aiohttp.ClientTimeout(total=5)) as response:
                if response.status != 200:
                    return  # 503 while a dependency fails over: nothing observed
                body = await response.json()
        except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError):
            return
        self.reads += 1
        entry = (time.monotonic(), body["status"], int(body["attempts"]))
        history = self.seen[job_id]
        if not history or history[-1][1:] != entry[1:]:
            history.append(entry)

    async def poll_once(self, everything: bool = False) -> None:
        """Read every unfinished job; finished ones too with ``everything``, else one in ten
        (a finished job read again is how a regression, completed -> processing, would show)."""
        pending = [job for job, history in self.seen.items()
                   if everything or not history or history[-1][1] not in TERMINAL or self.rng.random() < 0.1]
        gate = asyncio.Semaphore(16)

        async def one(job_id: str) -> None:
            async with gate:
                await self.read(job_id)
        await asyncio.gather(*(one(job) for job in pending))

    async def _loop(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(0.2)  # polling cadence of an observer, not synchronisation

    def unfinished(self) -> list[str]:
        return [job for job, history in self.seen.items() if not history or history[-1][1] not in TERMINAL]


def _multipart(fields: dict[str, str], data: bytes) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", data, filename="in.jpg", content_type="application/octet-stream")
    for name, value in fields.items():
        form.add_field(name, value)
    return form


class Load:
    """``concurrency`` clients, each sending one request of a random kind, then resting ``pace`` s."""

    def __init__(self, http: aiohttp.ClientSession, stack: ChaosStack, rng: random.Random, log: StatusLog,
                 concurrency: int = 3, pace: float = 0.5, t0: float = 0.0) -> None:
        self.http = http
        self.stack = stack
        self.rng = rng
        self.log = log
        self.concurrency = concurrency
        self.pace = pace
        self.t0 = t0
        self.submits: list[Submit] = []
        self.in_flight: dict[int, int] = {}
        """Requests under way per API index (a fault may wait for an API to have none)."""
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._images = [make_image(320 + 8 * n, 240) for n in range(4)]

    def _request(self, kind: str) -> tuple[str, Callable[[], dict], list[bool]]:
        """(path, a builder of the aiohttp keyword arguments, bad flag per job) of one request
        of ``kind``; a builder because a multipart body is single-use and a resend needs another."""
        path, kwargs, bad = self._shape(kind)
        if "data" not in kwargs:
            return path, lambda: kwargs, bad
        fields, data = kwargs["data"]
        return path, lambda: {"data": _multipart(fields, data)}, bad

    def _shape(self, kind: str) -> tuple[str, dict, list[bool]]:
        rng = self.rng
        width = str(rng.choice([64, 96, 128]))
        if kind == "upload":
            return "/api/v1/resize", {"data": ({"width": width}, rng.choice(self._images))}, [False]
        if kind == "storage_key":
            return "/api/v1/resize", {"json": {"input": {"storage_key": rng.choice(SEED_KEYS)},
                                               "parameters": {"width": int(width)}}}, [False]
        if kind == "pipeline":
            return "/api/v1/jobs", {"data": ({"spec": json.dumps(PIPELINE_SPEC)}, rng.choice(self._images))}, [False]
        if kind == "batch":
            size = rng.randint(2, 4)
            bad_at = rng.randrange(size) if rng.random() < 0.25 else -1
            items = [{"type": "resize", "input": {"storage_key": BAD_SEED_KEY if i == bad_at else rng.choice(SEED_KEYS)},
                      "parameters": {"width": int(width)}} for i in range(size)]
            return "/api/v1/jobs/batch", {"json": {"jobs": items}}, [i == bad_at for i in range(size)]
        assert kind == "bad"
        if rng.random() < 0.5:
            return "/api/v1/resize", {"data": ({"width": width}, BAD_INPUT)}, [True]
        return "/api/v1/resize", {"json": {"input": {"storage_key": BAD_SEED_KEY}, "parameters": {"width": 64}}}, [True]

    async def submit_one(self) -> Submit:
        kind = self.rng.choices(list(MIX), weights=list(MIX.values()))[0]
        path, build, bad = self._request(kind)
        record = Submit(kind, time.monotonic() - self.t0)
        key = os.urandom(12).hex()
        for attempt in range(RESENDS + 1):
            apis = self.stack.live_apis()
            if not apis:
                await asyncio.sleep(0.5)  # every API restarting: a client's back-off
                continue
            api: Api = self.rng.choice(apis)
            record.resends = attempt
            self.in_flight[api.index] = self.in_flight.get(api.index, 0) + 1
            try:
                async with self.http.post(api.url + path, headers={"Idempotency-Key": key}, **build()) as response:
                    record.status = response.status
                    body = await response.json(content_type=None)
            except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError) as exc:
                record.status, record.error = -1, repr(exc)[:200]
                continue
            finally:
                self.in_flight[api.index] -= 1
            if record.status == 202:
                record.jobs = [(body["job_id"], bad[0])]
            elif record.status == 200 and kind == "batch":
                record.jobs = [(item["job_id"], bad[item["index"]]) for item in body["items"] if "job_id" in item]
            else:
                record.error = json.dumps(body)[:300]
                error = body.get("error") if isinstance(body, dict) else None
                record.code = str(error.get("code", "?")) if isinstance(error, dict) else "?"
            break
        for job_id, is_bad in record.jobs:
            self.log.track(job_id, is_bad)
        self.submits.append(record)
        return record

    async def _client(self) -> None:
        while not self._stop.is_set():
            await self.submit_one()
            try:
                await asyncio.wait_for(self._stop.wait(), self.pace * self.rng.uniform(0.5, 1.5))
            except asyncio.TimeoutError:
                pass

    def start(self) -> "Load":
        self._tasks = [asyncio.create_task(self._client()) for _ in range(self.concurrency)]
        return self

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
