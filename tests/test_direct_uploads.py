"""Direct uploads (issue 12 §1): POST /api/v1/uploads, the upload itself with an ordinary HTTP
client (S3's presigned POST to moto, or the API's /uploads/{token}), then a job naming the
upload_id, checked at submit; the local sweep; `pixq upload`.

moto checks no signature and does not enforce POST policy conditions (content-length-range,
Content-Type): the S3 policy is proven by decoding the policy document pixq generates, and
pixq's own checks at claim (size, magic bytes) are proven by uploads moto accepts and pixq
refuses. The local endpoint enforces the same conditions itself, and is tested refusing them.
"""

import asyncio
import base64
import json
import os
import time
from pathlib import Path

import aiohttp
import pytest

from pixq import cli, names, stream_tokens
from pixq.signing import signed_path
from pixq.storage import upload_tokens
from tests.conftest import running_api, running_worker
from tests.helpers import make_image, wait_for_status

KEYS = {"Authorization": "Bearer key-a"}
OTHER = {"Authorization": "Bearer key-b"}
TENANT_KEYS = {"api_keys": {"key-a": "team-a", "key-b": "team-b"}}


async def request_upload(client, headers=KEYS, **body) -> dict:
    response = await client.post("/api/v1/uploads", json=body or None, headers=headers)
    assert response.status == 201, await response.text()
    answer = await response.json()
    assert set(answer) == {"upload_id", "url", "fields", "expires_at"}, answer
    return answer


async def post_form(answer: dict, data: bytes, content_type: str | None = "image/jpeg",
                    fields: dict | None = None) -> tuple[int, str]:
    """The upload as any client does it: a fresh aiohttp session (no API key), the returned
    fields, a Content-Type field unless bound already, then the file."""
    form = aiohttp.FormData()
    for name, value in (answer["fields"] if fields is None else fields).items():
        form.add_field(name, value)
    if content_type and "Content-Type" not in answer["fields"]:
        form.add_field("Content-Type", content_type)
    form.add_field("file", data, filename="photo.jpg", content_type="application/octet-stream")
    async with aiohttp.ClientSession() as session:
        async with session.post(answer["url"], data=form) as response:
            return response.status, await response.text()


async def submit(client, upload_id: str, headers=KEYS, **parameters) -> aiohttp.ClientResponse:
    return await client.post("/api/v1/resize", headers=headers,
                             json={"input": {"upload_id": upload_id}, "parameters": parameters or {"width": 40}})


async def error_of(response) -> str:
    body = await response.json()
    return body["error"]["code"]


@pytest.mark.parametrize("storage_type", ["local", "minio"])
async def test_upload_then_job_completes_and_upload_is_claimable_twice(make_settings, storage_type):
    settings = make_settings(storage_type, **TENANT_KEYS)
    async with running_api(settings) as client, running_worker(settings):
        answer = await request_upload(client)
        key = names.upload_object_key("team-a", answer["upload_id"])
        assert answer["fields"]["key"] == key
        if storage_type == "minio":
            assert answer["url"] == f"http://{settings.storage_endpoint}/{settings.bucket_name}"
        else:
            assert answer["url"].startswith(str(client.make_url("/uploads/")))
        status, text = await post_form(answer, make_image(120, 90))
        assert status == 204, text
        first, second = await submit(client, answer["upload_id"]), await submit(client, answer["upload_id"], width=30)
        assert first.status == second.status == 202, await first.text() + await second.text()
        for response, width in ((first, 40), (second, 30)):
            done = await wait_for_status(client, (await response.json())["job_id"], headers=KEYS)
            assert done["status"] == "completed", done
            assert done["result"]["width"] == width
        # The jobs read the frozen copy under inputs/, which the tenant may also name directly.
        frozen = names.claimed_upload_key("team-a", answer["upload_id"])
        again = await client.post("/api/v1/resize", headers=KEYS,
                                  json={"input": {"storage_key": frozen}, "parameters": {"width": 20}})
        assert again.status == 202, await again.text()


async def test_s3_policy_document_enforces_key_size_type_and_expiry(make_settings):
    settings = make_settings("minio", max_input_bytes=123456, upload_ttl=600, storage_sse="s3",
                             storage_public_endpoint="media.example.test:9443")
    async with running_api(settings) as client:
        before = time.time()
        answer = await request_upload(client, headers={})
        bound = await request_upload(client, headers={}, content_type="image/png")
    assert answer["url"] == f"http://media.example.test:9443/{settings.bucket_name}"
    key = f"uploads/default/{answer['upload_id']}"
    policy = json.loads(base64.b64decode(answer["fields"]["policy"]))
    conditions = policy["conditions"]
    assert ["eq", "$bucket", settings.bucket_name] in conditions
    assert ["eq", "$key", key] in conditions
    assert ["starts-with", "$Content-Type", "image/"] in conditions
    assert ["content-length-range", 1, 123456] in conditions
    assert ["eq", "$x-amz-server-side-encryption", "AES256"] in conditions
    assert answer["fields"]["x-amz-server-side-encryption"] == "AES256"
    assert answer["fields"]["key"] == key and "Content-Type" not in answer["fields"]
    expires = time.mktime(time.strptime(policy["expiration"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert before + 590 <= expires <= time.time() + 610, policy["expiration"]
    assert answer["fields"]["x-amz-credential"].startswith("testing/")
    bound_conditions = json.loads(base64.b64decode(bound["fields"]["policy"]))["conditions"]
    assert ["eq", "$Content-Type", "image/png"] in bound_conditions
    assert not [c for c in bound_conditions if c[0] == "starts-with"]
    assert bound["fields"]["Content-Type"] == "image/png"


async def test_create_upload_validates_its_body(make_settings):
    async with running_api(make_settings("local", **TENANT_KEYS)) as client:
        assert (await client.post("/api/v1/uploads")).status == 401
        refused = await client.post("/api/v1/uploads", headers=KEYS, json={"content_type": "text/html"})
        assert refused.status == 422 and await error_of(refused) == "INVALID_PARAMETERS"
        refused = await client.post("/api/v1/uploads", headers=KEYS, json={"filename": "a.jpg"})
        assert refused.status == 422
        refused = await client.post("/api/v1/uploads", headers=KEYS, data=b"[1]")
        assert refused.status == 400


async def test_local_endpoint_enforces_the_policy(make_settings):
    settings = make_settings("local", max_input_bytes=50_000, **TENANT_KEYS)
    image = make_image(64, 48)
    async with running_api(settings) as client:
        answer = await request_upload(client)
        target = settings.storage_dir / names.upload_object_key("team-a", answer["upload_id"])
        too_large = os.urandom(50_001)
        assert (await post_form(answer, too_large))[0] == 413
        assert (await post_form(answer, image, content_type="text/plain"))[0] == 415
        assert (await post_form(answer, image, content_type=None))[0] == 415
        assert (await post_form(answer, b""))[0] == 400
        other_key = {**answer["fields"], "key": "uploads/team-b/" + answer["upload_id"]}
        assert (await post_form(answer, image, fields=other_key))[0] == 403
        assert not target.exists() and not list(target.parent.glob(".part-*"))

        bound = await request_upload(client, content_type="image/png")
        assert (await post_form(bound, image, fields={**bound["fields"], "Content-Type": "image/jpeg"}))[0] == 415

        token = answer["url"].rsplit("/", 1)[1]
        version, payload, signature = token.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        forged = base64.urlsafe_b64encode(json.dumps({**claims, "t": "team-b"}).encode()).rstrip(b"=").decode()
        key = settings.signing_key()
        expired, _ = upload_tokens.mint(key, "team-a", answer["upload_id"], 3600, now=time.time() - 7200)
        stream_token, _ = stream_tokens.mint(key, "team-a", "user", answer["upload_id"], 3600)
        download_sig = signed_path(key, names.upload_object_key("team-a", answer["upload_id"]), 3600)
        for bad in (f"{version}.{forged}.{signature}", token[:-2] + ("AA" if token[-2:] != "AA" else "BB"),
                    expired, stream_token, download_sig.rsplit("sig=", 1)[1], "u1.e30.AAAA"):
            status, text = await post_form({**answer, "url": str(client.make_url(f"/uploads/{bad}"))}, image)
            assert status == 403, (bad, text)
        assert not target.exists()

        status, text = await post_form(answer, image)  # the genuine token still works
        assert status == 204 and target.read_bytes() == image, text


async def test_claim_refusals(make_settings):
    settings = make_settings("minio", max_input_bytes=200_000, **TENANT_KEYS)
    async with running_api(settings) as client:
        unknown = await submit(client, "00000000-0000-4000-8000-000000000000")
        assert unknown.status == 422 and await error_of(unknown) == "INPUT_NOT_FOUND"
        assert (await submit(client, "../../etc/passwd")).status == 422

        pending = await request_upload(client)  # issued, never uploaded
        response = await submit(client, pending["upload_id"])
        assert response.status == 422 and await error_of(response) == "INPUT_NOT_FOUND"

        mine = await request_upload(client)
        assert (await post_form(mine, make_image(120, 90)))[0] == 204
        theirs = await submit(client, mine["upload_id"], headers=OTHER)
        never = await submit(client, pending["upload_id"], headers=OTHER)
        assert theirs.status == never.status == 422
        # Another tenant's upload reads exactly like one never uploaded (only the id differs).
        assert (await theirs.json())["error"]["message"].replace(mine["upload_id"], "ID") == \
            (await never.json())["error"]["message"].replace(pending["upload_id"], "ID")

        # moto enforces no policy: the oversized and non-image uploads land, and pixq refuses them.
        large = await request_upload(client)
        assert (await post_form(large, os.urandom(200_001)))[0] == 204
        response = await submit(client, large["upload_id"])
        assert response.status == 413 and await error_of(response) == "PAYLOAD_TOO_LARGE"
        text = await request_upload(client)
        assert (await post_form(text, b"<html>not an image</html>", content_type="image/jpeg"))[0] == 204
        response = await submit(client, text["upload_id"])
        assert response.status == 415 and await error_of(response) == "UNSUPPORTED_MEDIA_TYPE"
        crop = await client.post("/api/v1/crop", headers=KEYS, json={
            "input": {"upload_id": mine["upload_id"]}, "parameters": {"x": 100, "y": 0, "width": 50, "height": 50}})
        assert crop.status == 422 and await error_of(crop) == "CROP_OUT_OF_BOUNDS"
        listed = await client.get("/api/v1/jobs", headers=KEYS)
        assert (await listed.json())["items"] == []  # nothing was queued by any refusal


async def test_claim_reads_whole_object_when_header_is_past_the_prefix(make_settings):
    """A JPEG whose SOF lies after 320 KB of comment segments: the 256 KiB prefix has no
    header, so the claim reads the whole object (and accepts it) rather than refusing it."""
    jpeg = make_image(120, 90)
    comment = b"\xff\xfe" + (65533).to_bytes(2, "big") + b"x" * 65531
    padded = jpeg[:2] + comment * 5 + jpeg[2:]
    assert len(padded) > 320_000
    settings = make_settings("local", **TENANT_KEYS)
    async with running_api(settings) as client, running_worker(settings):
        answer = await request_upload(client)
        assert (await post_form(answer, padded))[0] == 204
        response = await submit(client, answer["upload_id"])
        assert response.status == 202, await response.text()
        done = await wait_for_status(client, (await response.json())["job_id"], headers=KEYS)
        assert done["status"] == "completed" and done["result"]["width"] == 40, done


async def test_claimed_input_is_frozen(make_settings):
    """Re-posting to a still-valid upload URL after a claim changes nothing for claimed jobs."""
    settings = make_settings("local", **TENANT_KEYS)
    async with running_api(settings) as client:
        answer = await request_upload(client)
        assert (await post_form(answer, make_image(120, 90)))[0] == 204
        assert (await submit(client, answer["upload_id"])).status == 202
        assert (await post_form(answer, b"not an image any more"))[0] == 204
        response = await submit(client, answer["upload_id"])
        assert response.status == 202, await response.text()


async def test_batch_items_may_name_upload_ids(make_settings):
    settings = make_settings("local", **TENANT_KEYS)
    async with running_api(settings) as client:
        answer = await request_upload(client)
        assert (await post_form(answer, make_image(120, 90)))[0] == 204
        response = await client.post("/api/v1/jobs/batch", headers=KEYS, json={"jobs": [
            {"type": "resize", "input": {"upload_id": answer["upload_id"]}, "parameters": {"width": 40}},
            {"type": "resize", "input": {"upload_id": "00000000-0000-4000-8000-000000000000"},
             "parameters": {"width": 40}}]})
        body = await response.json()
        assert response.status in (200, 202, 207), body
        items = body["items"] if "items" in body else body["jobs"]
        assert "job_id" in items[0] and items[0].get("error") is None, items
        assert items[1]["error"]["code"] == "INPUT_NOT_FOUND", items


def printed_json(capsys) -> dict:
    """The CLI's JSON document (indented) from stdout, after any log lines."""
    out = capsys.readouterr().out
    return json.loads(out[out.rindex("\n{\n") + 1:] if not out.startswith("{\n") else out)


async def _gone(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while path.exists():
        assert time.monotonic() < deadline, f"{path} was not swept"
        await asyncio.sleep(0.02)


async def test_sweep_removes_expired_unclaimed_uploads_and_keeps_claimed_ones(make_settings):
    settings = make_settings("local", upload_retention=3600, upload_sweep_interval=0.05, **TENANT_KEYS)
    async with running_api(settings) as client, running_worker(settings):
        uploads = [await request_upload(client) for _ in range(3)]
        for answer in uploads:
            assert (await post_form(answer, make_image(120, 90)))[0] == 204
        unclaimed, claimed, fresh = uploads
        assert (await submit(client, claimed["upload_id"])).status == 202
        paths = {name: settings.storage_dir / names.upload_object_key("team-a", answer["upload_id"])
                 for name, answer in (("unclaimed", unclaimed), ("claimed", claimed), ("fresh", fresh))}
        old = time.time() - 7200
        for name in ("unclaimed", "claimed"):
            os.utime(paths[name], (old, old))
        await _gone(paths["unclaimed"])
        await _gone(paths["claimed"])  # the upload goes; its claimed copy under inputs/ stays
        assert paths["fresh"].exists()
        expired = await submit(client, unclaimed["upload_id"])
        assert expired.status == 422 and await error_of(expired) == "INPUT_NOT_FOUND"
        again = await submit(client, claimed["upload_id"], width=30)
        assert again.status == 202, await again.text()
        done = await wait_for_status(client, (await again.json())["job_id"], headers=KEYS)
        assert done["status"] == "completed" and done["result"]["width"] == 30, done
        assert (await submit(client, fresh["upload_id"])).status == 202


@pytest.mark.parametrize("storage_type", ["local", "minio"])
async def test_cli_upload_goes_through_the_presigned_flow(make_settings, storage_type, tmp_path, capsys):
    settings = make_settings(storage_type, **TENANT_KEYS)
    source = tmp_path / "photo"  # no extension: the type comes from the magic bytes
    source.write_bytes(make_image(120, 90))
    async with running_api(settings) as client, running_worker(settings):
        url = str(client.make_url(""))
        assert await cli.amain(["--api-url", url, "--api-key", "key-a", "upload", str(source)]) == 0
        printed = printed_json(capsys)
        assert printed["storage_key"] == names.upload_object_key("team-a", printed["upload_id"])
        response = await submit(client, printed["upload_id"])
        assert response.status == 202, await response.text()

        output = tmp_path / "out.jpg"
        code = await cli.amain(["--api-url", url, "--api-key", "key-a", "upload", str(source),
                                "--submit", "resize", "--width", "32", "--output", str(output)])
        done = printed_json(capsys)
        assert code == 0 and done["status"] == "completed" and done["result"]["width"] == 32, done
        assert output.read_bytes()[:3] == b"\xff\xd8\xff"

        code = await cli.amain(["--api-url", url, "--api-key", "key-a", "upload", str(source),
                                "--submit", "analyze", "--wait"])
        described = printed_json(capsys)
        assert code == 0 and described["type"] == "analyze" and described["result"]["variants"] == [], described
        assert described["result"]["input"]["width"] == 120 and len(described["result"]["analysis"]["dhash"]) == 16
        assert "gps" not in described["result"]["analysis"]["exif"]
        assert await cli.amain(["--api-url", url, "--api-key", "key-a", "upload", str(source),
                                "--submit", "resize", "--preset", "avatar"]) == 2
        assert "--submit job" in capsys.readouterr().err

        (tmp_path / "notes.txt").write_text("hello")
        assert await cli.amain(["--api-url", url, "--api-key", "key-a", "upload", str(tmp_path / "notes.txt")]) == 2
        assert "--content-type" in capsys.readouterr().err
