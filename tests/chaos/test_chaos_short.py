"""The chaos run of `make chaos`, 60 s long with a fixed seed (in `make test`): every fault
kind is injected once (worker SIGKILL, NATS node SIGKILL and SIGSTOP, Redis failover, storage
cut, API SIGKILL mid-upload) under mixed load, and every invariant must hold. The checkers
themselves are shown to fail on bad evidence (unit tests below: pure logic)."""

import random

import pytest

from tests.chaos import invariants
from tests.chaos.faults import KINDS
from tests.chaos.load import StatusLog, Submit
from tests.chaos.run import run

SEED = 14
SECONDS = 60


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_short_chaos_run_keeps_every_invariant(tmp_path):
    lines: list[str] = []
    report = await run(SECONDS, SEED, tmp_path, settle_timeout=45, hold_scale=0.5,
                       api_kill_under_load=False, out=lines.append)
    text = report.markdown()
    print(text)  # shown by pytest -s, and with a failure
    assert {fault.kind for fault in report.faults} == set(KINDS), text
    assert not [fault for fault in report.faults if fault.error], text
    assert report.killed_uploads and all(not u["answer"].startswith("HTTP 2") for u in report.killed_uploads), text
    assert len(report.log.seen) >= 50, text  # the load really ran through the faults
    assert any(is_bad for is_bad in report.log.bad.values()), text
    for verdict in report.verdicts:
        assert verdict.ok, f"{verdict.name}: {verdict.summary}\n" + "\n".join(verdict.details) + "\n" + text


def _log(histories: dict[str, list[tuple[str, int]]], bad: set[str] = frozenset()) -> StatusLog:
    log = StatusLog(None, None, random.Random(0))
    for job_id, history in histories.items():
        log.track(job_id, job_id in bad)
        log.seen[job_id] = [(float(n), status, attempts) for n, (status, attempts) in enumerate(history)]
    return log


def test_monotonic_flags_a_status_going_back():
    ok = _log({"a": [("queued", 0), ("processing", 1), ("retrying", 1), ("processing", 2), ("completed", 2)]})
    assert invariants.monotonic(ok).ok
    assert not invariants.monotonic(_log({"a": [("processing", 1), ("queued", 0)]})).ok
    assert not invariants.monotonic(_log({"a": [("completed", 1), ("processing", 1)]})).ok
    assert not invariants.monotonic(_log({"a": [("processing", 2), ("processing", 1)]})).ok


def test_terminal_and_dlq_flag_stuck_and_good_failed_jobs():
    log = _log({"good": [("completed", 1)], "bad": [("failed", 1)], "stuck": [("processing", 1)]}, bad={"bad"})
    assert not invariants.terminal(log).ok
    assert invariants.dlq_only_bad(log, [{"job_id": "bad"}]).ok
    assert not invariants.dlq_only_bad(log, [{"job_id": "good"}]).ok
    assert not invariants.dlq_only_bad(_log({"good": [("failed", 4)]}), []).ok


def test_no_500_allows_503_only():
    assert invariants.no_500([Submit("upload", 1.0, 503), Submit("upload", 2.0, 202)]).ok
    assert not invariants.no_500([Submit("upload", 1.0, 500)]).ok


def test_monotonic_flags_events_going_back_in_stream_order():
    log = _log({"a": [("completed", 1)]})
    assert invariants.monotonic(log, {"a": [(0, 0, 0), (0, 1, 1), (0, 1, 1), (0, 1, 3)]}).ok
    assert not invariants.monotonic(log, {"a": [(0, 0, 0), (0, 1, 3), (0, 1, 1)]}).ok
