"""POST /api/v1/analyze through HTTP with a real worker, and ``result.input`` on ordinary jobs."""

import pytest

from pixq.storage import make_storage
from tests.fixtures import fixture
from tests.helpers import form, make_image, wait_for_status

CMYK = "sharp/Channel_digital_image_CMYK_color.jpg"
CMYK_INPUT = {"width": 500, "height": 333, "format": "jpeg", "bands": 4, "has_alpha": False, "space": "cmyk",
              "icc_description": "U.S. Web Coated (SWOP) v2", "orientation": 1, "frames": 1}
CMYK_ANALYSIS = {
    "exif": {"make": "Canon", "model": "Canon EOS 300D DIGITAL", "lens": None, "taken_at": "2004-03-20T14:54:55"},
    "dominant_color": "#575a57",
    "blurhash": "L9EV~I53?aMy8{?IIVa|?1esWCk8",
    "dhash": "b3726236a2831637",
}


async def completed(api, response) -> dict:
    assert response.status == 202, await response.text()
    status = await wait_for_status(api, (await response.json())["job_id"])
    assert status["status"] == "completed", status
    return status


async def test_analyze_an_upload_returns_metadata_and_writes_no_image(api, worker, settings):
    response = await api.post("/api/v1/analyze", data=form(fixture(CMYK).read_bytes(), filename="cmyk.jpg"))
    status = await completed(api, response)
    assert status["type"] == "analyze"
    assert status["result"] == {"variants": [], "input": CMYK_INPUT, "analysis": CMYK_ANALYSIS}  # no url
    listed = await api.get("/api/v1/jobs", params={"type": "analyze"})
    assert [item["result"] for item in (await listed.json())["items"]] == [status["result"]]
    if settings.storage_type == "local":
        assert not (settings.storage_dir / "outputs").exists()


@pytest.mark.parametrize("storage_type", ["local"])
async def test_analyze_a_storage_key_with_gps_only_when_asked(api, worker, settings):
    from tests.test_metadata import gps_jpeg

    storage = make_storage(settings)
    await storage.ensure_ready()
    await storage.put_bytes("uploads/default/trip.jpg", gps_jpeg(), "image/jpeg")
    source = {"storage_key": "uploads/default/trip.jpg"}

    hidden = await completed(api, await api.post("/api/v1/analyze", json={"input": source}))
    assert "gps" not in hidden["result"]["analysis"]["exif"]
    assert hidden["result"]["analysis"]["exif"]["make"] == "PixqCam"

    shown = await completed(api, await api.post("/api/v1/analyze", json={"input": source,
                                                                        "parameters": {"include_gps": True}}))
    assert shown["result"]["analysis"]["exif"]["gps"] == {"latitude": -33.859833, "longitude": 151.21,
                                                          "altitude": 12.5}

    as_form = await completed(api, await api.post("/api/v1/analyze", data=form(gps_jpeg(), include_gps="true")))
    assert as_form["result"]["analysis"]["exif"]["gps"]["longitude"] == 151.21


@pytest.mark.parametrize("storage_type", ["local"])
async def test_every_completed_job_carries_its_inputs_metadata(api, worker):
    resized = await completed(api, await api.post("/api/v1/resize", data=form(make_image(320, 240), width=64)))
    assert resized["result"]["input"] == {"width": 320, "height": 240, "format": "jpeg", "bands": 3,
                                          "has_alpha": False, "space": "srgb", "icc_description": None,
                                          "orientation": 1, "frames": 1}
    assert "analysis" not in resized["result"] and resized["result"]["url"]
    spec = '{"variants": [{"name": "a", "width": 10}, {"name": "b", "width": 20}]}'
    pipeline = await completed(api, await api.post("/api/v1/jobs", data=form(fixture(CMYK).read_bytes(), spec=spec)))
    assert pipeline["result"]["input"] == CMYK_INPUT and len(pipeline["result"]["variants"]) == 2
    assert "analysis" not in pipeline["result"]


@pytest.mark.parametrize("storage_type", ["local"])
async def test_a_pipeline_may_ask_for_the_analysis_too(api, worker):
    spec = '{"variants": [{"name": "thumb", "width": 32}], "analyze": {"include_gps": false}}'
    status = await completed(api, await api.post("/api/v1/jobs", data=form(fixture(CMYK).read_bytes(), spec=spec)))
    assert status["type"] == "pipeline" and status["result"]["variants"][0]["width"] == 32
    assert status["result"]["analysis"] == CMYK_ANALYSIS and status["result"]["input"] == CMYK_INPUT


@pytest.mark.parametrize("storage_type", ["local"])
@pytest.mark.parametrize("fields, code", [
    ({"include_gps": "perhaps"}, "INVALID_PARAMETERS"),
    ({"width": "100"}, "INVALID_PARAMETERS"),  # analyze takes no resize parameters
])
async def test_analyze_refuses_bad_parameters_at_submit(api, fields, code):
    response = await api.post("/api/v1/analyze", data=form(make_image(40, 30), **fields))
    assert response.status == 422, await response.text()
    assert (await response.json())["error"]["code"] == code


@pytest.mark.parametrize("storage_type", ["local"])
async def test_analyze_refuses_a_non_image_at_submit(api):
    response = await api.post("/api/v1/analyze", data=form(b"plain text, not pixels " * 20))
    assert response.status == 415, await response.text()
    assert (await response.json())["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
