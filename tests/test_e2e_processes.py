"""End to end: pixq-api and pixq-worker as processes, driven by the pixq CLI, as a user would."""

import json
import signal
import subprocess
from pathlib import Path

import pytest
import pyvips

from tests.helpers import make_image
from tests.stack import BIN, Stack, stack_env


@pytest.fixture
def stack(nats, redis_proc, tmp_path):
    stack = Stack(stack_env(nats.port, redis_proc.port, tmp_path), tmp_path)
    stack.start_api()
    stack.start_worker()
    stack.start_worker()
    yield stack
    stack.stop()


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "pixq"), "--api-url", stack.api_url, *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_submit_wait_download_and_clean_shutdown(stack, tmp_path: Path):
    source = tmp_path / "photo.jpg"
    source.write_bytes(make_image(800, 600))
    out = tmp_path / "out.webp"
    done = cli(stack, "submit", "resize", str(source), "--width", "320", "--format", "webp", "--output", str(out))
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["status"] == "completed" and status["result"]["format"] == "webp"
    image = pyvips.Image.new_from_file(str(out))
    assert (image.width, image.height) == (320, 240)

    again = cli(stack, "status", status["job_id"])
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "completed"

    refused = cli(stack, "submit", "crop", str(source), "--width", "0", "--height", "10")
    assert refused.returncode == 2 and "INVALID_PARAMETERS" in refused.stderr

    unknown = cli(stack, "status", "00000000-0000-0000-0000-000000000000")
    assert unknown.returncode == 2 and "404 NOT_FOUND" in unknown.stderr

    # SIGTERM: every process exits 0 and logs JSON lines carrying job_id and request_id.
    for proc in [*stack.workers, stack.api]:
        proc.signal(signal.SIGTERM)
    assert [proc.wait(30) for proc in [*stack.workers, stack.api]] == [0, 0, 0]
    lines = [json.loads(line) for proc in stack.workers for line in proc.log.read_text().splitlines() if line]
    about_job = [line for line in lines if line.get("job_id") == status["job_id"]]
    assert about_job and all(line.get("request_id") for line in about_job)
    # Every process runs on uvloop, the default EVENT_LOOP (its start-up line names the running loop).
    started = started_lines(stack)
    assert [line["event_loop"] for line in started] == ["uvloop"] * 3, started


def started_lines(stack: Stack) -> list[dict]:
    """Each process's start-up log line (worker_started, api_started): it names the running loop."""
    return [line for proc in [*stack.workers, stack.api] for line in map(json.loads, proc.log.read_text().splitlines())
            if line.get("event") in ("worker_started", "api_started")]


def test_bad_configuration_names_the_variable(tmp_path):
    env = stack_env(1, 1, tmp_path, JOB_TIMEOUT="soon", WORKER_CONCURRENCY="0", EVENT_LOOP="trio")
    for script in ("pixq-api", "pixq-worker"):
        done = subprocess.run([str(BIN / script)], env=env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 2
        assert all(name in done.stderr for name in ("JOB_TIMEOUT", "WORKER_CONCURRENCY", "EVENT_LOOP")), done.stderr


def test_event_loop_asyncio_runs_a_job_on_the_standard_loop(nats, redis_proc, tmp_path: Path):
    """EVENT_LOOP=asyncio, the fallback, is a working configuration, not just an accepted value."""
    stack = Stack(stack_env(nats.port, redis_proc.port, tmp_path, EVENT_LOOP="asyncio"), tmp_path)
    try:
        stack.start_api()
        stack.start_worker()
        source = tmp_path / "photo.jpg"
        source.write_bytes(make_image(200, 100))
        done = cli(stack, "submit", "resize", str(source), "--width", "50", "--wait")
        assert done.returncode == 0 and json.loads(done.stdout)["status"] == "completed", done.stderr
    finally:
        stack.stop()
    started = started_lines(stack)
    assert [line["event_loop"] for line in started] == ["asyncio"] * 2, started
