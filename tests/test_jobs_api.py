"""Submit → JetStream → worker → storage → status, through HTTP, for both storage backends."""

import pyvips
from yarl import URL

from tests.helpers import form, make_image, wait_for_status


async def download(api, url: str) -> bytes:
    """Fetch a result URL as a user would: local links via the API, presigned URLs directly."""
    parsed = URL(url)
    if parsed.path.startswith("/files/"):
        response = await api.get(parsed.path_qs if hasattr(parsed, "path_qs") else str(parsed.relative()))
    else:
        response = await api.session.get(url)
    assert response.status == 200, await response.text()
    return await response.read()


async def test_resize_upload_completes_and_downloads(api, worker):
    response = await api.post("/api/v1/resize", data=form(make_image(640, 480), width=200, height=200, fit="inside"))
    assert response.status == 202, await response.text()
    body = await response.json()
    assert body["status"] == "queued"
    assert response.headers["Location"] == f"/api/v1/jobs/{body['job_id']}"

    status = await wait_for_status(api, body["job_id"])
    assert status["status"] == "completed", status
    assert status["type"] == "resize" and status["attempts"] == 1
    assert status["error"] is None and status["error_code"] is None
    result = status["result"]
    assert (result["width"], result["height"], result["format"]) == (200, 150, "jpeg")
    image = pyvips.Image.new_from_buffer(await download(api, result["url"]), "")
    assert (image.width, image.height) == (200, 150)
    assert result["bytes"] > 0


async def test_crop_from_storage_key_json(api, worker, settings):
    from pixq.storage import make_storage

    storage = make_storage(settings)
    await storage.ensure_ready()
    await storage.put_bytes("uploads/photo.png", make_image(300, 200, ".png"), "image/png")
    response = await api.post("/api/v1/crop", json={"input": {"storage_key": "uploads/photo.png"},
                                                    "parameters": {"x": 10, "y": 20, "width": 100, "height": 50}})
    assert response.status == 202, await response.text()
    status = await wait_for_status(api, (await response.json())["job_id"])
    assert status["status"] == "completed", status
    assert (status["result"]["width"], status["result"]["height"], status["result"]["format"]) == (100, 50, "png")
    image = pyvips.Image.new_from_buffer(await download(api, status["result"]["url"]), "")
    # The gradient's red channel grows with x: the crop starting at x=10 begins dark.
    assert image(0, 0)[0] < 20 and (image.width, image.height) == (100, 50)
