"""A storage key that can never be read is INPUT_NOT_FOUND, a permanent failure: refused at
submit (422) when it names a directory, and failed at once (no retry, no DLQ) when, by the
time a worker reads it, it names a directory or a path through a file. Local storage."""

import shutil

from tests.conftest import running_api, running_worker
from tests.helpers import make_image, wait_for_status


async def submit_key(api, key: str):
    return await api.post("/api/v1/resize", json={"input": {"storage_key": key}, "parameters": {"width": 10}})


async def test_a_key_that_can_never_be_read_fails_permanently(make_settings, tmp_path):
    settings = make_settings("local", max_retries=3)
    shared = tmp_path / "storage" / "shared"
    (shared / "album").mkdir(parents=True)
    async with running_api(settings) as api:
        response = await submit_key(api, "shared/album")
        assert response.status == 422, await response.text()
        assert (await response.json())["error"]["code"] == "INPUT_NOT_FOUND"

        # Accepted while they were files; by the time the worker reads them, one key names a
        # directory and the other a path through a file.
        (shared / "photo.jpg").write_bytes(make_image(64, 48))
        (shared / "day").mkdir()
        (shared / "day" / "photo.jpg").write_bytes(make_image(64, 48))
        jobs = []
        for key in ("shared/photo.jpg", "shared/day/photo.jpg"):
            response = await submit_key(api, key)
            assert response.status == 202, await response.text()
            jobs.append((await response.json())["job_id"])
        (shared / "photo.jpg").unlink()
        (shared / "photo.jpg").mkdir()
        shutil.rmtree(shared / "day")
        (shared / "day").write_bytes(b"a file where a directory was")

        async with running_worker(settings):
            outcomes = [await wait_for_status(api, job_id) for job_id in jobs]
        for outcome in outcomes:
            assert outcome["status"] == "failed" and outcome["error_code"] == "INPUT_NOT_FOUND", outcome
            assert outcome["attempts"] == 1, f"retried as if storage were down: {outcome}"
        listing = await (await api.get("/api/v1/dlq")).json()
        assert listing["total"] == 0, listing
