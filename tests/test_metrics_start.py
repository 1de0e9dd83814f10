"""Metrics from the first second: a fresh pixq-api and a fresh pixq-worker, before any job,
export every labelled counter's series at 0 (each route x status class; each job type x
outcome), and the worker exports the queue backlog gauge KEDA-style scaling uses."""

import re
import urllib.request

import aiohttp
import pytest

from pixq.jobs import JobType
from tests.faults.harness import accepted, metric, wait_job, wait_until
from tests.stack import Stack, stack_env

ROUTES = [
    ("POST", "/api/v1/resize"), ("POST", "/api/v1/crop"), ("POST", "/api/v1/jobs"), ("GET", "/api/v1/jobs"),
    ("GET", "/api/v1/jobs/{job_id}"), ("GET", "/api/v1/dlq"), ("DELETE", "/api/v1/dlq"),
    ("POST", "/api/v1/dlq/replay"), ("GET", "/api/v1/dlq/{job_id}"), ("POST", "/api/v1/dlq/{job_id}/replay"),
    ("DELETE", "/api/v1/dlq/{job_id}"), ("GET", "/files/{key}"), ("GET", "/health/live"),
    ("GET", "/health/ready"), ("GET", "/metrics"), ("POST", "/api/v1/analyze"), ("POST", "/api/v1/uploads"),
    ("POST", "/uploads/{token}"), ("POST", "/api/v1/jobs/batch"), ("GET", "/api/v1/batches/{batch_id}"),
    ("GET", "/api/v1/events"), ("GET", "/api/v1/jobs/{job_id}/events"), ("POST", "/api/v1/events/token"),
    ("GET", "/api/v1/jobs/{job_id}/deliveries"),
]
CLASSES = ("2xx", "3xx", "4xx", "5xx")
JOB_TYPES = tuple(job_type.value for job_type in JobType)
OUTCOMES = ("completed", "failed", "retried", "dead_lettered")
SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
            samples.setdefault(match["name"], []).append((labels, float(match["value"])))
    return samples


@pytest.fixture
def stack(nats, redis_proc, tmp_path):
    stack = Stack(stack_env(nats.port, redis_proc.port, tmp_path, WORKER_CONCURRENCY="1"), tmp_path)
    yield stack
    stack.stop()


def test_fresh_processes_export_every_counter_series_at_zero(stack):
    stack.start_api()
    worker = stack.start_worker()

    api = scrape(stack.api_url)
    requests = {(labels["method"], labels["route"], labels["status"]): value
                for labels, value in api["pixq_api_requests_total"]}
    # The readiness probes of start-up may have counted: everything else is still 0.
    missing = [(method, route, cls) for method, route in ROUTES for cls in CLASSES
               if (method, route, cls) not in requests]
    assert not missing, missing
    assert all(cls in CLASSES for _, _, cls in requests), sorted(requests)
    counted = {key: value for key, value in requests.items() if value}
    assert set(counted) <= {("GET", "/health/ready", "2xx"), ("GET", "/health/ready", "5xx")}, counted

    samples = scrape(worker.metrics_url)
    jobs = {(labels["type"], labels["outcome"]): value for labels, value in samples["pixq_worker_jobs_total"]}
    assert jobs == {(job_type, outcome): 0.0 for job_type in JOB_TYPES for outcome in OUTCOMES}, jobs
    for gauge in ("pixq_queue_backlog_messages", "pixq_queue_pending_messages", "pixq_dlq_messages"):
        assert samples[gauge] == [({}, 0.0)], (gauge, samples.get(gauge))


async def test_backlog_counts_jobs_waiting_and_jobs_held_by_a_worker(stack):
    """pixq_queue_backlog_messages = num_pending + num_ack_pending: with one worker slot busy on a
    slow job, the backlog is one more than the jobs nobody has taken yet.

    Four slow jobs (~5 s each here), not two: the gauges are sampled every 5 s, so with two the
    only window in which one is held and one waits is a single job long and a sample can miss it;
    with four it spans three jobs, at least two samples."""
    stack.start_api()
    worker = stack.start_worker()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        jobs = [await accepted(http, stack.api_url, "slow") for _ in range(4)]

        async def one_held_two_waiting():
            backlog = await metric(http, worker, "pixq_queue_backlog_messages")
            pending = await metric(http, worker, "pixq_queue_pending_messages")
            return backlog is not None and backlog >= 2 and backlog == pending + 1
        await wait_until(one_held_two_waiting, 20, "a sample with one job held and others waiting")
        for job_id in jobs:
            assert (await wait_job(http, stack.api_url, job_id, timeout=60))["status"] == "completed"

        async def drained():
            return await metric(http, worker, "pixq_queue_backlog_messages") == 0
        await wait_until(drained, 15, "the backlog gauge back at 0")
        completed = await metric(http, worker, "pixq_worker_jobs_total", 'outcome="completed"')
        assert completed == 4
