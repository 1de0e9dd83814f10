"""One contract between API and worker: the job message carries the normalised, typed
PipelineSpec the API compiled (never the raw form strings), the worker runs exactly that
spec, and messages in the old form (raw ``parameters``) still run and replay."""

import json
import uuid

import pytest

from pixq import names
from pixq.jobs import JobMessage, JobType, utc_now
from pixq.spec import PipelineSpec, to_pipeline
from tests.conftest import running_api, running_worker
from tests.faults.harness import JetStreamProbe, wait_until
from tests.helpers import form, make_image, wait_for_status

SPECS = [
    (JobType.RESIZE, {"width": "64", "height": "48", "fit": "cover", "format": "JPG", "gravity": "center",
                      "background": "00ff00", "quality": "70", "progressive": "true"}),
    (JobType.RESIZE, {"height": 10, "fit": "contain"}),
    (JobType.CROP, {"x": "1", "y": "2", "width": "30", "height": "20", "format": "tif"}),
    (JobType.CROP, {"width": 30, "height": 20, "gravity": "attention", "strip": "false"}),
    (JobType.PIPELINE, {"steps": [{"op": "rotate", "angle": 90}, {"op": "resize", "width": 100},
                                  {"op": "crop", "width": 50, "height": 50}, {"op": "blur", "sigma": 1},
                                  {"op": "sharpen"}, {"op": "grayscale"}, {"op": "flip"}, {"op": "flop"}],
                        "variants": [{"name": "a", "format": "webp", "lossless": True},
                                     {"name": "b", "width": 20, "fit": "fill", "format": "same"}]}),
]


@pytest.mark.parametrize("job_type, parameters", SPECS)
def test_the_typed_spec_survives_the_message_unchanged(job_type, parameters):
    spec = to_pipeline(job_type, parameters)
    message = JobMessage(job_id=str(uuid.uuid4()), type=job_type, spec=spec,
                         input={"storage_key": "k"}, metadata={"created_at": utc_now()})
    body = json.loads(message.model_dump_json())
    assert "parameters" not in body and "retry_count" not in body["metadata"]
    read = JobMessage.model_validate_json(message.model_dump_json())
    assert read.spec == spec
    assert PipelineSpec.model_validate(body["spec"]) == spec


def test_an_old_message_is_compiled_once_and_a_bad_one_refused():
    old = {"job_id": str(uuid.uuid4()), "type": "resize", "parameters": {"width": "64", "format": "jpg"},
           "input": {"storage_key": "k"}, "metadata": {"created_at": utc_now(), "retry_count": 0}}
    assert JobMessage.model_validate(old).spec == to_pipeline(JobType.RESIZE, {"width": 64, "format": "jpeg"})
    with pytest.raises(ValueError):
        JobMessage.model_validate({**old, "parameters": {"width": "0"}})
    with pytest.raises(ValueError):  # the worker re-validates the typed spec: no unknown keys, no strings
        JobMessage.model_validate({**old, "spec": {"variants": [{"name": "a", "width": "wide"}]}})


async def test_api_publishes_the_typed_spec_and_the_worker_runs_it(make_settings, nats):
    settings = make_settings("local")
    async with running_api(settings) as api, JetStreamProbe(nats.port) as probe:
        fields = dict(SPECS[0][1])
        response = await api.post("/api/v1/resize", data=form(make_image(320, 240), **fields))
        assert response.status == 202, await response.text()
        job_id = (await response.json())["job_id"]

        published = json.loads((await probe.js.get_msg(names.JOBS_STREAM, 1)).data)
        assert published["job_id"] == job_id and "parameters" not in published
        variant = published["spec"]["variants"][0]
        assert variant["width"] == 64 and variant["quality"] == 70 and variant["progressive"] is True
        assert (variant["format"], variant["gravity"], variant["background"]) == ("jpeg", "centre", "#00ff00")
        assert published["spec"] == to_pipeline(JobType.RESIZE, fields).model_dump(mode="json")

        async with running_worker(settings):
            done = await wait_for_status(api, job_id)
        assert done["status"] == "completed", done
        assert (done["result"]["width"], done["result"]["height"], done["result"]["format"]) == (64, 48, "jpeg")


async def test_old_messages_in_the_stream_and_the_dlq_still_run(make_settings, nats, tmp_path):
    """Messages published before the typed spec (raw ``parameters``, ``retry_count``): one still
    queued in PIXQ_JOBS runs; one dead-lettered in PIXQ_DLQ replays and runs."""
    settings = make_settings("local")
    (tmp_path / "storage" / "legacy").mkdir(parents=True)
    (tmp_path / "storage" / "legacy" / "in.jpg").write_bytes(make_image(200, 100))

    def legacy(job_id: str) -> dict:
        return {"job_id": job_id, "type": "resize", "parameters": {"width": "50", "format": "png"},
                "input": {"storage_key": "legacy/in.jpg"},
                "metadata": {"created_at": utc_now(), "retry_count": 0, "request_id": "legacy", "generation": 0}}

    queued, dead = str(uuid.uuid4()), str(uuid.uuid4())
    async with running_api(settings) as api, JetStreamProbe(nats.port) as probe:
        await probe.js.publish(names.job_subject("resize"), json.dumps(legacy(queued)).encode(),
                               headers={"Nats-Msg-Id": f"{queued}:0"}, stream=names.JOBS_STREAM)
        entry = {"job_id": dead, "type": "resize", "message": legacy(dead), "error_code": "TIMEOUT",
                 "error": "old", "attempts": 3, "reason": "retries_exhausted", "dead_lettered_at": utc_now()}
        await probe.js.publish(names.dlq_subject(dead), json.dumps(entry).encode(), stream=names.DLQ_STREAM)

        # The replay republishes the job in the new form.
        replay = await api.post(f"/api/v1/dlq/{dead}/replay")
        assert replay.status == 202, await replay.text()
        republished = json.loads((await probe.js.get_msg(names.JOBS_STREAM, 2)).data)
        assert republished["job_id"] == dead and republished["metadata"]["generation"] == 1
        assert "parameters" not in republished and republished["spec"]["variants"][0]["width"] == 50

        async def finished(job_id: str):
            response = await api.get(f"/api/v1/jobs/{job_id}")  # 404 until a worker writes a status
            body = await response.json() if response.status == 200 else {}
            return body if body.get("status") in ("completed", "failed") else None

        async with running_worker(settings):
            done = await wait_until(lambda: finished(queued), 30, "the queued old message to finish")
            replayed = await wait_until(lambda: finished(dead), 30, "the replayed old message to finish")
        assert done["status"] == "completed" and done["result"]["format"] == "png", done
        assert replayed["status"] == "completed" and replayed["result"]["width"] == 50, replayed
