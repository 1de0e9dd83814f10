"""POST /api/v1/jobs (steps + variants) and hostile inputs through the real worker."""

import json
import shutil

from tests.conftest import running_api, running_worker
from tests.fixtures import fixture
from tests.helpers import form, make_image, wait_for_status


async def test_pipeline_with_steps_and_variants(api, worker):
    spec = {"steps": [{"op": "rotate", "angle": 90}, {"op": "grayscale"}],
            "variants": [{"name": "large", "width": 300, "format": "webp", "quality": 70},
                         {"name": "thumb", "width": 64, "height": 64, "fit": "cover", "format": "png"},
                         {"name": "original"}]}
    response = await api.post("/api/v1/jobs", data=form(make_image(640, 480), spec=json.dumps(spec)))
    assert response.status == 202, await response.text()
    status = await wait_for_status(api, (await response.json())["job_id"])
    assert status["status"] == "completed", status
    variants = {v["name"]: v for v in status["result"]["variants"]}
    assert set(variants) == {"large", "thumb", "original"}
    # rotated 90°: 480x640 portrait
    assert (variants["large"]["width"], variants["large"]["height"], variants["large"]["format"]) == (300, 400, "webp")
    assert (variants["thumb"]["width"], variants["thumb"]["height"], variants["thumb"]["format"]) == (64, 64, "png")
    assert (variants["original"]["width"], variants["original"]["height"]) == (480, 640)
    assert len({v["storage_key"] for v in variants.values()}) == 3 and all(v["url"] for v in variants.values())
    assert status["result"]["storage_key"] == variants["large"]["storage_key"]


# Inputs that pass the submit-time sniff (or arrive by storage_key, unsniffed) and must fail
# cleanly in the worker with a specific code, leaving the worker healthy.
HOSTILE = [
    ("sharp/truncated.jpg", "INVALID_IMAGE"),
    ("sharp/corrupt-header.jpg", None),
    ("sharp/giant-image.jpg", "IMAGE_TOO_LARGE"),
    ("sharp/65536-uint32-limit.png", "IMAGE_TOO_LARGE"),
    ("sharp/circle.svg", "UNSUPPORTED_FORMAT"),
    ("pillow/hopper.bmp", "UNSUPPORTED_FORMAT"),
]


async def test_hostile_inputs_fail_with_codes_and_worker_stays_healthy(make_settings):
    settings = make_settings("local")
    sources = {name: fixture(name) for name, _ in HOSTILE}  # vendored: a missing file fails here
    async with running_api(settings) as api:
        async with running_worker(settings) as worker:
            job_ids = {}
            for name, _ in HOSTILE:
                target = settings.storage_dir / "hostile" / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(sources[name], target)
                response = await api.post("/api/v1/resize", json={"input": {"storage_key": f"hostile/{name}"},
                                                                  "parameters": {"width": 100}})
                assert response.status == 202, await response.text()
                job_ids[name] = (await response.json())["job_id"]
            for name, code in HOSTILE:
                status = await wait_for_status(api, job_ids[name])
                if code is None:
                    assert status["status"] in ("completed", "failed")
                    assert status["status"] == "completed" or status["error_code"]
                else:
                    assert (status["status"], status["error_code"]) == ("failed", code), (name, status)
                assert status["attempts"] == 1, (name, status)  # permanent: never retried
            # the worker is still alive and processing
            ok = await api.post("/api/v1/resize", data=form(make_image(100, 100), width=10))
            assert (await wait_for_status(api, (await ok.json())["job_id"]))["status"] == "completed"
            assert not worker.done()
