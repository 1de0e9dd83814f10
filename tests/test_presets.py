"""Presets: PRESETS_FILE loading (a bad file stops the process), submitting ``{"preset": …}``
(JSON and multipart), versions (``name`` = last declared, ``name@version``), the recorded
``preset`` in the status document and the job message, and the refusals (preset with
parameters, preset on /resize, unknown preset, a tenant outside a preset's allowlist).
Real API, workers, nats-server and redis-server."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nats
import pytest
from pydantic import ValidationError

from pixq import names
from pixq.jobs import JobMessage
from pixq.presets import parse_presets_file
from pixq.settings import Settings
from tests.conftest import running_api, running_worker
from tests.helpers import form, make_image, wait_for_status

PRESETS = """
presets:
  - name: avatar
    version: 1
    variants: [{name: small, width: 32, height: 32, fit: cover, format: png}]
  - name: avatar
    version: 2
    steps: [{op: grayscale}]
    variants:
      - {name: small, width: 48, height: 48, fit: cover, format: webp}
      - {name: large, width: 96, height: 96, fit: cover, format: webp}
  - name: catalogue
    version: "2026-11"
    tenants: [alpha]
    variants: [{name: thumb, width: 40}]
"""


def write_presets(tmp_path: Path, text: str = PRESETS) -> Path:
    path = tmp_path / "presets.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def preset_settings(make_settings, tmp_path):
    return make_settings("local", presets_file=write_presets(tmp_path))


async def put_input(settings, key: str) -> None:
    from pixq.storage import make_storage

    storage = make_storage(settings)
    await storage.ensure_ready()
    await storage.put_bytes(key, make_image(320, 240), "image/jpeg")


async def test_preset_job_runs_the_latest_version_and_records_it(preset_settings):
    async with running_api(preset_settings) as api, running_worker(preset_settings):
        await put_input(preset_settings, "inputs/default/a.jpg")
        response = await api.post("/api/v1/jobs", json={"preset": "avatar", "input": {"storage_key": "inputs/default/a.jpg"}})
        assert response.status == 202, await response.text()
        status = await wait_for_status(api, (await response.json())["job_id"])
        assert status["status"] == "completed", status
        assert status["type"] == "pipeline"
        assert status["preset"] == {"name": "avatar", "version": 2}
        variants = {v["name"]: (v["width"], v["height"], v["format"]) for v in status["result"]["variants"]}
        assert variants == {"small": (48, 48, "webp"), "large": (96, 96, "webp")}

        # An older version stays selectable, and is what the job records.
        response = await api.post("/api/v1/jobs", json={"preset": "avatar@1", "input": {"storage_key": "inputs/default/a.jpg"}})
        assert response.status == 202, await response.text()
        status = await wait_for_status(api, (await response.json())["job_id"])
        assert status["status"] == "completed", status
        assert status["preset"] == {"name": "avatar", "version": 1}
        assert [(v["name"], v["width"], v["format"]) for v in status["result"]["variants"]] == [("small", 32, "png")]

        # Jobs without a preset carry no preset field.
        response = await api.post("/api/v1/jobs", json={"input": {"storage_key": "inputs/default/a.jpg"},
                                                        "parameters": {"variants": [{"name": "x", "width": 20}]}})
        status = await wait_for_status(api, (await response.json())["job_id"])
        assert status["status"] == "completed" and "preset" not in status


async def test_multipart_preset_field(preset_settings):
    async with running_api(preset_settings) as api, running_worker(preset_settings):
        response = await api.post("/api/v1/jobs", data=form(make_image(120, 90), preset="avatar@1"))
        assert response.status == 202, await response.text()
        status = await wait_for_status(api, (await response.json())["job_id"])
        assert status["status"] == "completed", status
        assert status["preset"] == {"name": "avatar", "version": 1}
        assert status["result"]["variants"][0]["width"] == 32


async def test_job_message_carries_the_preset(preset_settings):
    """No worker runs: the message stays in PIXQ_JOBS, where its preset is read back."""
    async with running_api(preset_settings) as api:
        await put_input(preset_settings, "inputs/default/m.jpg")
        response = await api.post("/api/v1/jobs", json={"preset": "avatar", "input": {"storage_key": "inputs/default/m.jpg"}})
        assert response.status == 202, await response.text()
        job_id = (await response.json())["job_id"]
        nc = await nats.connect(preset_settings.nats_url)
        try:
            raw = await nc.jetstream().get_last_msg(names.JOBS_STREAM, names.job_subject("pipeline"))
        finally:
            await nc.close()
        message = JobMessage.model_validate_json(raw.data)
        assert message.job_id == job_id
        assert message.preset == {"name": "avatar", "version": 2}
        assert [v.name for v in message.spec.variants] == ["small", "large"]
        assert message.spec.steps[0].op == "grayscale"


@pytest.mark.parametrize("route, body, fragment", [
    ("/api/v1/jobs", {"preset": "avatar", "parameters": {"variants": [{"name": "x", "width": 9}]}}, "not both"),
    ("/api/v1/resize", {"preset": "avatar", "parameters": {}}, "POST /api/v1/jobs"),
    ("/api/v1/crop", {"preset": "avatar"}, "POST /api/v1/jobs"),
    ("/api/v1/jobs", {"preset": "nope"}, "unknown preset"),
    ("/api/v1/jobs", {"preset": "avatar@3"}, "unknown preset"),
])
async def test_refused_preset_submits(preset_settings, route, body, fragment):
    async with running_api(preset_settings) as api:
        await put_input(preset_settings, "inputs/default/r.jpg")
        response = await api.post(route, json={**body, "input": {"storage_key": "inputs/default/r.jpg"}})
        assert response.status == 422, await response.text()
        error = (await response.json())["error"]
        assert error["code"] == "INVALID_PARAMETERS" and fragment in error["message"], error
        listing = await (await api.get("/api/v1/jobs")).json()
        assert listing["items"] == []  # nothing was created


async def test_multipart_preset_with_parameters_is_refused(preset_settings):
    async with running_api(preset_settings) as api:
        response = await api.post("/api/v1/jobs", data=form(make_image(60, 40), preset="avatar", width=10))
        assert response.status == 422, await response.text()
        assert "not both" in (await response.json())["error"]["message"]


async def test_preset_tenant_allowlist(make_settings, tmp_path):
    settings = make_settings("local", presets_file=write_presets(tmp_path), api_keys="alpha=key-a,beta=key-b")
    async with running_api(settings) as api, running_worker(settings):
        await put_input(settings, "inputs/alpha/c.jpg")
        await put_input(settings, "inputs/beta/c.jpg")
        response = await api.post("/api/v1/jobs", headers={"Authorization": "Bearer key-b"},
                                  json={"preset": "catalogue", "input": {"storage_key": "inputs/beta/c.jpg"}})
        assert response.status == 422, await response.text()
        assert "unknown preset" in (await response.json())["error"]["message"]
        response = await api.post("/api/v1/jobs", headers={"Authorization": "Bearer key-a"},
                                  json={"preset": "catalogue", "input": {"storage_key": "inputs/alpha/c.jpg"}})
        assert response.status == 202, await response.text()
        status = await wait_for_status(api, (await response.json())["job_id"], headers={"Authorization": "Bearer key-a"})
        assert status["status"] == "completed", status
        assert status["preset"] == {"name": "catalogue", "version": "2026-11"}
        assert status["result"]["variants"][0]["width"] == 40


@pytest.mark.parametrize("text, fragment", [
    ("presets: [{name: a, version: 1, variants: [{name: v, fit: sideways}]}]", "presets.0 (a@1): variants.0.fit"),
    ("presets: [{name: a, version: 1}, {name: a, version: 1}]", "a@1 is declared twice"),
    ("presets: [{name: a}]", "presets.0.version"),
    ("presets: [{name: a, version: 1, colour: red}]", "presets.0.colour"),
    ("presets: [{name: a, version: 1}]\ningest: [{prefix: outputs/x/, preset: a, tenant: t}]", "overlaps 'outputs/'"),
    ("presets: [{name: a, version: 1}]\ningest: [{prefix: out, preset: a, tenant: t}]", "ending with '/'"),
    ("presets: [{name: a, version: 1}]\ningest: [{prefix: in/, preset: b, tenant: t}]", "unknown preset 'b'"),
    ("presets: [{name: a, version: 1}]\ningest: [{prefix: in/, preset: a}]", "ingest.0.tenant"),
    ("presets: [{name: a, version: 1}]\ningest: [{prefix: in/, preset: a, tenant: t}, "
     "{prefix: in/sub/, preset: a, tenant: t}]", "overlaps 'in/'"),
    ("presets: [{name: a, version: 1, tenants: [u]}]\ningest: [{prefix: in/, preset: a, tenant: t}]",
     "not allowed for tenant 't'"),
    ("presets: [", "not valid YAML"),
])
def test_bad_presets_file_is_refused(tmp_path, text, fragment):
    path = write_presets(tmp_path, text)
    with pytest.raises(ValidationError) as refused:
        Settings(presets_file=path)
    assert fragment in str(refused.value), str(refused.value)


def test_bad_presets_file_stops_the_process(tmp_path):
    path = write_presets(tmp_path, "presets: [{name: a, version: 1, variants: [{name: v, width: -1}]}]")
    result = subprocess.run([sys.executable, "-c", "from pixq.settings import load_settings; load_settings()"],
                            env={**os.environ, "PRESETS_FILE": str(path)}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2, result
    assert result.stderr.startswith("invalid configuration: PRESETS_FILE: presets.0 (a@1): variants.0.width"), \
        result.stderr


def test_versions_and_defaults():
    catalogue = parse_presets_file(PRESETS)
    assert catalogue.resolve("avatar").ref == {"name": "avatar", "version": 2}
    assert catalogue.resolve("avatar@1").ref == {"name": "avatar", "version": 1}
    assert catalogue.resolve("catalogue@2026-11", "alpha").version == "2026-11"
    assert json.dumps(catalogue.resolve("catalogue", "alpha").ref) == '{"name": "catalogue", "version": "2026-11"}'


async def test_cli_submit_preset(preset_settings, tmp_path, capsys):
    """``pixq submit job FILE --preset avatar@1`` and ``--key … --preset avatar`` (in-process CLI)."""
    from pixq import cli
    from tests.test_cli_notifications import document

    image = tmp_path / "in.jpg"
    image.write_bytes(make_image(320, 240))
    async with running_api(preset_settings) as api, running_worker(preset_settings):
        url = str(api.make_url(""))
        assert await cli.amain(["--api-url", url, "submit", "job", str(image), "--preset", "avatar@1", "--wait"]) == 0
        status = document(capsys.readouterr().out)
        assert status["status"] == "completed" and status["preset"] == {"name": "avatar", "version": 1}
        await put_input(preset_settings, "inputs/default/cli.jpg")
        assert await cli.amain(["--api-url", url, "submit", "job", "--key", "inputs/default/cli.jpg",
                                "--preset", "avatar", "--wait"]) == 0
        status = document(capsys.readouterr().out)
        assert status["status"] == "completed" and status["preset"] == {"name": "avatar", "version": 2}
        # A preset is a pipeline: refused for resize before any request.
        assert await cli.amain(["--api-url", url, "submit", "resize", str(image), "--preset", "avatar"]) == 2


async def test_batch_items_may_name_a_preset(preset_settings):
    async with running_api(preset_settings) as api, running_worker(preset_settings):
        await put_input(preset_settings, "inputs/default/b.jpg")
        source = {"storage_key": "inputs/default/b.jpg"}
        response = await api.post("/api/v1/jobs/batch", json={"jobs": [
            {"type": "pipeline", "preset": "avatar@1", "input": source},
            {"type": "resize", "preset": "avatar", "input": source},
        ]})
        assert response.status == 200, await response.text()
        items = (await response.json())["items"]
        assert items[1]["error"]["code"] == "INVALID_PARAMETERS", items
        status = await wait_for_status(api, items[0]["job_id"])
        assert status["status"] == "completed" and status["preset"] == {"name": "avatar", "version": 1}
