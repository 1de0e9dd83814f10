"""Bad input is refused at submit with a stable code, and a refused or failed submit leaves nothing behind."""

import pytest

from tests.conftest import running_api
from tests.helpers import form, jobs_in_stream, make_image


def stored_objects(settings) -> list:
    root = settings.storage_dir
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


async def assert_error(response, status: int, code: str) -> dict:
    assert response.status == status, await response.text()
    body = await response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]
    assert response.headers["X-Request-ID"]
    return body


@pytest.fixture
async def local_api(make_settings):
    settings = make_settings("local", max_input_bytes=200_000, max_input_pixels=4_000_000)
    async with running_api(settings) as client:
        client.pixq_settings = settings
        yield client


@pytest.mark.parametrize("fields", [
    {"width": 0}, {"width": -5}, {"width": 100000}, {"width": "abc"}, {"fit": "zoom", "width": 10},
    {}, {"width": 10, "quality": 0}, {"width": 10, "format": "bmp"}, {"width": 10, "background": "red"},
    {"width": 10, "unknown": 1},
])
async def test_invalid_resize_parameters_are_refused_at_submit(local_api, fields):
    await assert_error(await local_api.post("/api/v1/resize", data=form(make_image(64, 64), **fields)),
                       422, "INVALID_PARAMETERS")
    assert await jobs_in_stream(local_api.pixq_settings) == 0
    assert stored_objects(local_api.pixq_settings) == []


@pytest.mark.parametrize("parameters", [{"x": 0, "y": 0}, {"x": 1, "width": 5, "height": 5}, {"width": 5}])
async def test_crop_needs_a_complete_box(local_api, parameters):
    response = await local_api.post("/api/v1/crop", data=form(make_image(64, 64), **parameters))
    await assert_error(response, 422, "INVALID_PARAMETERS")


async def test_crop_box_outside_the_image_is_refused_when_size_is_known(local_api):
    response = await local_api.post("/api/v1/crop", data=form(make_image(64, 48), x=40, y=0, width=30, height=10))
    await assert_error(response, 422, "CROP_OUT_OF_BOUNDS")


async def test_not_an_image_is_415(local_api):
    await assert_error(await local_api.post("/api/v1/resize", data=form(b"hello, I am text" * 10, width=10)),
                       415, "UNSUPPORTED_MEDIA_TYPE")
    assert stored_objects(local_api.pixq_settings) == []


async def test_upload_over_max_input_bytes_is_413(local_api):
    import pyvips
    big = pyvips.Image.gaussnoise(600, 600).cast("uchar").write_to_buffer(".png")
    assert len(big) > 200_000
    await assert_error(await local_api.post("/api/v1/resize", data=form(big, width=10)), 413, "PAYLOAD_TOO_LARGE")
    assert stored_objects(local_api.pixq_settings) == []


async def test_pixel_count_over_limit_is_refused_from_the_header(local_api):
    import pyvips
    bomb = pyvips.Image.black(2500, 2000).write_to_buffer(".png", compression=9)  # 5 MP, tiny file
    assert len(bomb) < 200_000
    await assert_error(await local_api.post("/api/v1/resize", data=form(bomb, width=10)), 413, "IMAGE_TOO_LARGE")


async def test_request_shape_errors(local_api):
    await assert_error(await local_api.post("/api/v1/resize", data="width=10",
                                            headers={"Content-Type": "text/plain"}), 415, "UNSUPPORTED_MEDIA_TYPE")
    await assert_error(await local_api.post("/api/v1/resize", data="{not json",
                                            headers={"Content-Type": "application/json"}), 400, "INVALID_REQUEST")
    await assert_error(await local_api.post("/api/v1/resize", json={"parameters": {"width": 10}}),
                       400, "INVALID_REQUEST")
    await assert_error(await local_api.post("/api/v1/resize", json={"input": {"storage_key": "missing.jpg"},
                                                                    "parameters": {"width": 10}}),
                       422, "INPUT_NOT_FOUND")
    await assert_error(await local_api.post("/api/v1/resize", json={"input": {"storage_key": "../etc/passwd"},
                                                                    "parameters": {"width": 10}}),
                       422, "INVALID_PARAMETERS")
    await assert_error(await local_api.get("/api/v1/jobs/not-a-job"), 404, "NOT_FOUND")
    await assert_error(await local_api.get("/api/v1/nothing-here"), 404, "NOT_FOUND")
    await assert_error(await local_api.get("/api/v1/resize"), 405, "METHOD_NOT_ALLOWED")
    await assert_error(await local_api.get("/files/outputs/x.jpg?expires=1&sig=00"), 403, "FORBIDDEN")


async def test_pipeline_spec_limits(local_api):
    too_many = {"variants": [{"name": f"v{i}", "width": 10} for i in range(11)]}
    response = await local_api.post("/api/v1/jobs", data=form(make_image(64, 64), spec=__import__("json").dumps(too_many)))
    await assert_error(response, 422, "INVALID_PARAMETERS")
    steps = {"steps": [{"op": "grayscale"}] * 11}
    response = await local_api.post("/api/v1/jobs", json={"input": {"storage_key": "x"}, "parameters": steps})
    await assert_error(response, 422, "INVALID_PARAMETERS")


async def test_api_keys_guard_every_api_route(make_settings):
    settings = make_settings("local", api_keys={"s3cret": "team-a"})
    async with running_api(settings) as api:
        await assert_error(await api.post("/api/v1/resize", data=form(make_image(32, 32), width=8)),
                           401, "UNAUTHORIZED")
        await assert_error(await api.get("/api/v1/jobs/x", headers={"Authorization": "Bearer wrong"}),
                           401, "UNAUTHORIZED")
        ok = await api.post("/api/v1/resize", data=form(make_image(32, 32), width=8),
                            headers={"Authorization": "Bearer s3cret"})
        assert ok.status == 202
        assert (await api.get("/health/live")).status == 200  # probes stay open


async def test_idempotency_key_returns_the_same_job(local_api):
    first = await local_api.post("/api/v1/resize", data=form(make_image(32, 32), width=8),
                                 headers={"Idempotency-Key": "order-42"})
    again = await local_api.post("/api/v1/resize", data=form(make_image(32, 32), width=8),
                                 headers={"Idempotency-Key": "order-42"})
    other = await local_api.post("/api/v1/resize", data=form(make_image(32, 32), width=8),
                                 headers={"Idempotency-Key": "order-43"})
    assert first.status == again.status == other.status == 202
    first_id, again_id, other_id = [(await r.json())["job_id"] for r in (first, again, other)]
    assert first_id == again_id != other_id
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await jobs_in_stream(local_api.pixq_settings) == 2
    assert len(stored_objects(local_api.pixq_settings)) == 2


async def test_health_and_metrics(local_api):
    assert (await local_api.get("/health/live")).status == 200
    ready = await local_api.get("/health/ready")
    assert ready.status == 200 and (await ready.json())["checks"] == {"nats": True, "redis": True, "storage": True}
    await local_api.get("/api/v1/jobs/nope")
    text = await (await local_api.get("/metrics")).text()
    assert 'pixq_api_requests_total{method="GET",route="/api/v1/jobs/{job_id}",status="4xx"}' in text
    assert "pixq_api_request_duration_seconds_bucket" in text


async def test_redis_down_gives_503_and_publishes_nothing(local_api, redis_proc):
    redis_proc.stop()
    await assert_error(await local_api.post("/api/v1/resize", data=form(make_image(32, 32), width=8)),
                       503, "STATUS_UNAVAILABLE")
    ready = await local_api.get("/health/ready")
    assert ready.status == 503 and (await ready.json())["checks"]["redis"] is False
    assert await jobs_in_stream(local_api.pixq_settings) == 0
    assert stored_objects(local_api.pixq_settings) == []


async def test_nats_down_gives_503_and_leaves_no_status(local_api, nats, redis_proc):
    import redis
    nats.stop()
    await assert_error(await local_api.post("/api/v1/resize", data=form(make_image(32, 32), width=8)),
                       503, "QUEUE_UNAVAILABLE")
    assert (await local_api.get("/health/ready")).status == 503
    client = redis.Redis(port=redis_proc.port)
    assert client.keys("pixq:job:*") == []
    assert stored_objects(local_api.pixq_settings) == []
