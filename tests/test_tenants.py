"""Tenants: isolated keys, per-tenant jobs, idempotency and storage prefixes, admin routes that
never open by accident. Real API + worker against real nats-server and redis-server."""

import json
import subprocess
from pathlib import Path

import pytest

from pixq.tenants import key_digest, load_directory
from tests.conftest import running_api, running_worker
from tests.helpers import form, make_image, wait_for_status
from tests.stack import BIN, Stack, stack_env

ALPHA, BETA, OPS = "alpha-secret-1", "beta-secret-1", "ops-secret-1"
ALPHA_NEXT = "alpha-secret-2"


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def write_tenants(path: Path, tenants: list[dict]) -> Path:
    path.write_text(json.dumps({"tenants": tenants}))  # JSON is YAML
    return path


@pytest.fixture
def tenants_file(tmp_path: Path) -> Path:
    return write_tenants(tmp_path / "tenants.yaml", [
        {"name": "alpha", "role": "user", "keys": [key_digest(ALPHA), key_digest(ALPHA_NEXT)],
         "settings": {"storage_prefixes": ["shared/catalogue/"]}},
        {"name": "beta", "role": "user", "keys": [key_digest(BETA)]},
        {"name": "ops", "role": "admin", "keys": [key_digest(OPS)]},
    ])


async def submit(api, secret: str, **headers) -> str:
    response = await api.post("/api/v1/resize", data=form(make_image(64, 48), width=32),
                              headers={**bearer(secret), **headers})
    assert response.status == 202, await response.text()
    return (await response.json())["job_id"]


async def test_jobs_belong_to_their_tenant(make_settings, tenants_file: Path):
    settings = make_settings("local", tenants_file=tenants_file)
    async with running_api(settings) as api, running_worker(settings):
        job_id = await submit(api, ALPHA)
        done = await wait_for_status(api, job_id, headers=bearer(ALPHA))
        assert done["status"] == "completed"
        # Inputs and outputs carry the tenant in their keys.
        assert done["result"]["storage_key"].startswith(f"outputs/alpha/{job_id}/")
        assert (settings.storage_dir / "inputs" / "alpha" / job_id).is_file()

        # A second key of the same tenant (rotation) sees it; another tenant gets exactly the
        # answer a job that never existed gets; an admin sees every tenant.
        assert (await api.get(f"/api/v1/jobs/{job_id}", headers=bearer(ALPHA_NEXT))).status == 200
        theirs = await api.get(f"/api/v1/jobs/{job_id}", headers=bearer(BETA))
        missing = await api.get("/api/v1/jobs/00000000-0000-4000-8000-000000000000", headers=bearer(BETA))
        assert theirs.status == missing.status == 404
        assert (await theirs.json()) == (await missing.json())
        admin_view = await api.get(f"/api/v1/jobs/{job_id}", headers=bearer(OPS))
        assert admin_view.status == 200 and (await admin_view.json())["status"] == "completed"

        # An unknown key is 401, whatever the route.
        assert (await api.get(f"/api/v1/jobs/{job_id}", headers=bearer("nobody"))).status == 401


async def test_idempotency_keys_are_scoped_per_tenant(make_settings, tenants_file: Path):
    settings = make_settings("local", tenants_file=tenants_file)
    async with running_api(settings) as api:
        alpha_job = await submit(api, ALPHA, **{"Idempotency-Key": "order-1"})
        beta_job = await submit(api, BETA, **{"Idempotency-Key": "order-1"})
        alpha_again = await submit(api, ALPHA_NEXT, **{"Idempotency-Key": "order-1"})
        assert alpha_job == alpha_again != beta_job


async def test_storage_keys_are_confined_to_the_tenants_prefixes(make_settings, tenants_file: Path):
    settings = make_settings("local", tenants_file=tenants_file)
    image = make_image(64, 48)
    for key in ("inputs/beta/photo.jpg", "shared/catalogue/photo.jpg", "shared/other/photo.jpg", "photo.jpg"):
        path = settings.storage_dir / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image)

    async def by_key(secret: str, key: str):
        return await api.post("/api/v1/resize", json={"input": {"storage_key": key}, "parameters": {"width": 16}},
                              headers=bearer(secret))

    async with running_api(settings) as api:
        # Another tenant's object is refused without touching storage, like a missing object.
        refused = await by_key(ALPHA, "inputs/beta/photo.jpg")
        assert refused.status == 422 and (await refused.json())["error"]["code"] == "INPUT_NOT_FOUND"
        for key in ("shared/other/photo.jpg", "photo.jpg", "inputs/alpha/../beta/photo.jpg"):
            assert (await by_key(ALPHA, key)).status == 422, key
        # The tenant's own prefix, a prefix TENANTS_FILE grants, and an admin's any key.
        assert (await by_key(BETA, "inputs/beta/photo.jpg")).status == 202
        assert (await by_key(ALPHA, "shared/catalogue/photo.jpg")).status == 202
        assert (await by_key(BETA, "shared/catalogue/photo.jpg")).status == 422
        assert (await by_key(OPS, "shared/other/photo.jpg")).status == 202


async def test_admin_routes_need_an_admin_key(make_settings, tenants_file: Path):
    settings = make_settings("local", tenants_file=tenants_file)
    async with running_api(settings) as api:
        for method, path in (("GET", "/api/v1/dlq"), ("DELETE", "/api/v1/dlq"), ("POST", "/api/v1/dlq/replay"),
                             ("GET", "/api/v1/dlq/00000000-0000-4000-8000-000000000000")):
            assert (await api.request(method, path)).status == 401, path
            user = await api.request(method, path, headers=bearer(ALPHA))
            assert user.status == 403 and (await user.json())["error"]["code"] == "FORBIDDEN", path
        assert (await api.get("/api/v1/dlq", headers=bearer(OPS))).status == 200
        assert (await api.delete("/api/v1/dlq", headers=bearer(OPS))).status == 200


async def test_without_an_admin_key_the_dlq_is_closed(make_settings):
    """API_KEYS set, ADMIN_API_KEYS unset: the DLQ answers 403 to everyone, DELETE included."""
    settings = make_settings("local", api_keys={"user-key": "team-a"})
    async with running_api(settings) as api:
        for method in ("GET", "DELETE"):
            assert (await api.request(method, "/api/v1/dlq", headers=bearer("user-key"))).status == 403
        assert (await api.post("/api/v1/dlq/replay", headers=bearer("user-key"))).status == 403


@pytest.mark.parametrize("job_id", ["*", ">", "a.b", "pixq.jobs.>", "%2A", "00000000-0000-4000-8000-00000000000G",
                                    "00000000-0000-4000-8000-000000000000.x", "x" * 300])
async def test_job_ids_are_checked_before_any_use(make_settings, job_id: str):
    settings = make_settings("local", admin_api_keys={"admin-key": "ops"})
    async with running_api(settings) as api:
        for method, path in (("GET", f"/api/v1/jobs/{job_id}"), ("GET", f"/api/v1/dlq/{job_id}"),
                             ("POST", f"/api/v1/dlq/{job_id}/replay"), ("DELETE", f"/api/v1/dlq/{job_id}")):
            response = await api.request(method, path, headers=bearer("admin-key"))
            assert response.status == 404, (method, path, await response.text())
        # The purge of a wildcard subject would have emptied the DLQ: it still answers.
        assert (await api.get("/api/v1/dlq", headers=bearer("admin-key"))).status == 200


def test_tenants_file_errors_name_the_variable(tmp_path: Path, make_settings, capsys):
    cases = {
        "plain key": [{"name": "a", "keys": ["not-a-digest"]}],
        "bad name": [{"name": "A.B", "keys": [key_digest("k")]}],
        "bad role": [{"name": "a", "role": "root", "keys": [key_digest("k")]}],
        "shared key": [{"name": "a", "keys": [key_digest("k")]}, {"name": "b", "keys": [key_digest("k")]}],
    }
    for case, tenants in cases.items():
        settings = make_settings("local", tenants_file=write_tenants(tmp_path / f"{case}.yaml", tenants))
        with pytest.raises(SystemExit) as exit_info:
            load_directory(settings)
        assert exit_info.value.code == 2, case
        assert "invalid configuration: TENANTS_FILE:" in capsys.readouterr().err, case


def test_an_open_api_refuses_a_public_address(tmp_path: Path):
    """No key at all: the API is open only on loopback, unless API_ALLOW_OPEN says so."""
    env = stack_env(1, 1, tmp_path, API_HOST="0.0.0.0")
    done = subprocess.run([str(BIN / "pixq-api")], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "invalid configuration: API_HOST:" in done.stderr


def test_logs_and_metrics_name_the_tenant_never_the_key(nats, redis_proc, tmp_path: Path, tenants_file: Path):
    stack = Stack(stack_env(nats.port, redis_proc.port, tmp_path, TENANTS_FILE=str(tenants_file)), tmp_path)
    stack.start_api()
    stack.start_worker()
    try:
        source = tmp_path / "photo.jpg"
        source.write_bytes(make_image(80, 60))
        done = subprocess.run([str(BIN / "pixq"), "--api-url", stack.api_url, "submit", "resize", str(source),
                               "--width", "40", "--wait"], env={**stack.env, "PIXQ_API_KEY": BETA},
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        job_id = json.loads(done.stdout)["job_id"]
        import urllib.request
        metrics = urllib.request.urlopen(f"{stack.api_url}/metrics", timeout=5).read().decode()
    finally:
        stack.stop()
    assert 'pixq_jobs_submitted_total{tenant="beta",type="resize"} 1.0' in metrics
    assert 'pixq_jobs_submitted_total{tenant="alpha",type="resize"} 0.0' in metrics
    logs = [stack.api.log, *(worker.log for worker in stack.workers)]
    lines = [json.loads(line) for log in logs for line in log.read_text().splitlines() if line.startswith("{")]
    about_job = [line for line in lines if line.get("job_id") == job_id]
    assert len({line.get("service") for line in about_job}) == 2  # API and worker both logged it
    assert about_job and all(line.get("tenant") == "beta" and line.get("request_id") for line in about_job)
    everything = metrics + "".join(log.read_text() for log in logs)
    for secret in (ALPHA, BETA, OPS, ALPHA_NEXT):
        assert secret not in everything
