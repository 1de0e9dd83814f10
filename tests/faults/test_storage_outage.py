"""S3 storage unreachable for a while (workers reach moto through a proxy we cut): jobs show
`retrying` with next_attempt_at and STORAGE_UNAVAILABLE, then complete once it forwards again."""

import uuid
from datetime import datetime

import pytest

from tests.faults.harness import StatusRecorder, accepted, get_json, wait_job
from tests.faults.tcp_proxy import ToggleProxy

JOBS = 4


@pytest.fixture
def proxy(s3_endpoint):
    host, port = s3_endpoint.rsplit(":", 1)
    proxy = ToggleProxy(host, int(port)).start()
    yield proxy
    proxy.stop()


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


async def test_storage_outage_retries_with_backoff_then_completes(make_stack, http, s3_endpoint, proxy):
    stack = make_stack(STORAGE_TYPE="minio", STORAGE_ENDPOINT=s3_endpoint, BUCKET_NAME=f"pixq-{uuid.uuid4().hex[:12]}",
                       MINIO_ACCESS_KEY="testing", MINIO_SECRET_KEY="testing",
                       MAX_RETRIES="6", RETRY_BACKOFF="0s,1s,2s")
    _, api = stack.spawn_api()  # the API talks to S3 directly: uploads work throughout
    worker = stack.spawn_worker(STORAGE_ENDPOINT=proxy.endpoint)

    proxy.down()
    jobs = [await accepted(http, api, "small") for _ in range(JOBS)]
    recorder = StatusRecorder(http, api)
    for job_id in jobs:
        recorder.track(job_id)
    recorder.start()
    try:
        for job_id in jobs:
            body = await wait_job(http, api, job_id, {"retrying"}, timeout=30,
                                  where=lambda b: b["attempts"] >= 2 and b.get("next_attempt_at"))
            assert body["error_code"] == "STORAGE_UNAVAILABLE", body
            assert _when(body["next_attempt_at"]) > _when(body["updated_at"]), body
        status, ready = await get_json(http, f"{worker.metrics_url}/health/ready")
        assert status == 503 and ready["checks"]["storage"] is False, ready
        assert proxy.refused > 0
        assert all(recorder.latest(job_id)[0] != "failed" for job_id in jobs)

        proxy.up()
        await recorder.wait_all({"completed"}, timeout=45)
    finally:
        await recorder.stop()
    recorder.assert_monotonic()
    for job_id in jobs:
        history = [status for _, status, _ in recorder.seen[job_id]]
        assert "retrying" in history, history
        _, attempts = recorder.latest(job_id)
        assert 2 < attempts <= 7, recorder.seen[job_id]
        body = await wait_job(http, api, job_id, {"completed"})
        assert body["error_code"] is None and "next_attempt_at" not in body, body
        async with http.get(body["result"]["url"]) as download:
            assert download.status == 200 and len(await download.read()) == body["result"]["bytes"]
