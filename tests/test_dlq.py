"""Retries exhausted → DLQ → inspect → replay (same job_id, fresh budget) → completed."""

from tests.conftest import running_api, running_worker
from tests.helpers import form, make_image, wait_for_status

ADMIN = {"Authorization": "Bearer admin-secret"}
USER = {"Authorization": "Bearer user-secret"}


async def test_timeouts_exhaust_retries_then_replay_completes(make_settings):
    keys = dict(api_keys={"user-secret": "user"}, admin_api_keys={"admin-secret": "ops"})
    hopeless = make_settings("local", job_timeout=0.0001, **keys)
    async with running_api(hopeless) as api:
        async with running_worker(hopeless):
            accepted = await api.post("/api/v1/resize", data=form(make_image(), width=64), headers=USER)
            assert accepted.status == 202
            job_id = (await accepted.json())["job_id"]
            dead = await wait_for_status(api, job_id, headers=USER)
        assert dead["status"] == "failed" and dead["error_code"] == "DEAD_LETTERED"
        assert dead["attempts"] == 3  # MAX_RETRIES=2 after the first attempt
        assert "TIMEOUT" in dead["error"]

        assert (await api.get("/api/v1/dlq", headers=USER)).status == 403
        assert (await api.get("/api/v1/dlq")).status == 401
        listing = await (await api.get("/api/v1/dlq", headers=ADMIN)).json()
        assert [item["job_id"] for item in listing["items"]] == [job_id] and listing["total"] == 1
        entry = await (await api.get(f"/api/v1/dlq/{job_id}", headers=ADMIN)).json()
        assert entry["error_code"] == "TIMEOUT" and entry["attempts"] == 3
        assert entry["message"]["job_id"] == job_id and entry["message"]["spec"]["variants"][0]["width"] == 64

    healthy = make_settings("local", **keys)
    async with running_api(healthy) as api:
        async with running_worker(healthy):
            replay = await api.post(f"/api/v1/dlq/{job_id}/replay", headers=ADMIN)
            assert replay.status == 202, await replay.text()
            done = await wait_for_status(api, job_id, headers=USER)
            assert done["status"] == "completed" and done["attempts"] == 1, done
            assert done["result"]["width"] == 64
        listing = await (await api.get("/api/v1/dlq", headers=ADMIN)).json()
        assert listing["total"] == 0
        assert (await api.get(f"/api/v1/dlq/{job_id}", headers=ADMIN)).status == 404
        assert (await api.delete(f"/api/v1/dlq/{job_id}", headers=ADMIN)).status == 404
