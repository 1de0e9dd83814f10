"""Source URLs end to end: submit ``{"input": {"url"}}`` to the real API, a real worker fetches
it from a loopback source server this test runs (tests.source_server), and the outcome is
read back through GET /api/v1/jobs/{id}.

Most tests allow private networks and http (the source is 127.0.0.1); the last ones turn
OUTBOUND_ALLOW_PRIVATE_NETWORKS off and show that the loopback source then receives no
connection at all.
"""

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from aiohttp.test_utils import TestClient

import pixq.cli as cli
from pixq.tenants import key_digest
from tests.conftest import running_api, running_worker
from tests.fixtures import fixture
from tests.helpers import wait_for_status
from tests.source_server import ENDLESS, Answer, SourceServer

JPEG = fixture("sharp/Landscape_1.jpg").read_bytes()
PNG = fixture("sharp/with-alpha.png").read_bytes()
OPEN = dict(outbound_allow_private_networks=True, source_allow_http=True, source_allowed_hosts="127.0.0.1")


@contextlib.asynccontextmanager
async def stack(make_settings, worker: bool = True, **overrides) -> AsyncIterator[tuple[TestClient, SourceServer]]:
    """API (+ worker) with ``overrides``, and a source server (entered first, closed last)."""
    settings = make_settings("local", **{**OPEN, "retry_backoff": [0.0, 0.1], **overrides})
    async with SourceServer() as source, running_api(settings) as api:
        if worker:
            async with running_worker(settings):
                yield api, source
        else:
            yield api, source


async def submit(api: TestClient, url: str, headers: dict | None = None, width: int = 64):
    return await api.post("/api/v1/resize", json={"input": {"url": url}, "parameters": {"width": width}},
                          headers=headers or {})


async def run(api: TestClient, url: str, headers: dict | None = None) -> dict:
    response = await submit(api, url, headers)
    assert response.status == 202, await response.text()
    return await wait_for_status(api, (await response.json())["job_id"], headers=headers)


async def refused_at_submit(api: TestClient, url: str, headers: dict | None = None) -> dict:
    """422 SOURCE_REFUSED, and no job was created."""
    before = await (await api.get("/api/v1/jobs", headers=headers or {})).json()
    response = await submit(api, url, headers)
    body = await response.json()
    assert response.status == 422 and body["error"]["code"] == "SOURCE_REFUSED", body
    after = await (await api.get("/api/v1/jobs", headers=headers or {})).json()
    assert after["items"] == before["items"], after
    return body


def printed_json(out: str) -> dict:
    """The CLI's JSON document, after any log lines the in-process API and worker printed."""
    start = 0 if out.startswith("{\n") else out.index("\n{\n") + 1
    return json.JSONDecoder().raw_decode(out, start)[0]


async def test_jpeg_and_png_sources_complete_and_the_url_is_not_shown(make_settings):
    async with stack(make_settings) as (api, source):
        source.routes["/photo.jpg"] = Answer(body=JPEG, headers={"Content-Type": "image/jpeg"})
        source.routes["/alpha.png"] = Answer(body=PNG, declare_length=False)  # streamed to EOF
        for path in ("/photo.jpg", "/alpha.png"):
            status = await run(api, source.url(path) + "?token=SECRET-TOKEN")
            assert status["status"] == "completed" and status["attempts"] == 1, status
            assert status["result"]["width"] == 64
            assert "SECRET-TOKEN" not in json.dumps(status)
        assert source.paths() == ["/photo.jpg?token=SECRET-TOKEN", "/alpha.png?token=SECRET-TOKEN"]


async def test_a_4xx_fails_at_once_and_a_5xx_is_retried(make_settings):
    async with stack(make_settings) as (api, source):
        source.routes["/gone.jpg"] = Answer(404, b"no such photo")
        source.routes["/flaky.jpg"] = [Answer(503, b"busy"), Answer(body=JPEG)]
        source.routes["/limited.jpg"] = [Answer(429, b"slow down"), Answer(body=JPEG)]

        gone = await run(api, source.url("/gone.jpg?sig=abc"))
        assert (gone["status"], gone["error_code"], gone["attempts"]) == ("failed", "SOURCE_REJECTED", 1), gone
        assert "404" in gone["error"] and "sig=abc" not in gone["error"]
        for path in ("/flaky.jpg", "/limited.jpg"):
            status = await run(api, source.url(path))
            assert status["status"] == "completed" and status["attempts"] == 2, status
        assert source.paths().count("/gone.jpg?sig=abc") == 1  # never retried
        assert source.paths().count("/flaky.jpg") == 2


async def test_a_source_slower_than_source_timeout_is_retried(make_settings):
    async with stack(make_settings, source_timeout=0.5, max_retries=1) as (api, source):
        source.routes["/slow.jpg"] = [Answer(stall=True), Answer(body=JPEG)]
        source.routes["/stuck.jpg"] = Answer(stall=True)
        status = await run(api, source.url("/slow.jpg"))
        assert status["status"] == "completed" and status["attempts"] == 2, status
        assert source.paths() == ["/slow.jpg", "/slow.jpg"]
        # Out of retries, the last error shows it was SOURCE_TIMEOUT (not JOB_TIMEOUT=20s) that cut in.
        status = await run(api, source.url("/stuck.jpg"))
        assert (status["status"], status["error_code"], status["attempts"]) == ("failed", "DEAD_LETTERED", 2)
        assert "SOURCE_UNAVAILABLE" in status["error"] and "SOURCE_TIMEOUT=0.5s" in status["error"], status


async def test_too_large_declared_or_streamed_and_non_images_fail_at_once(make_settings):
    async with stack(make_settings, max_input_bytes=JPEG.__len__() + 1000) as (api, source):
        source.routes["/declared.jpg"] = Answer(body=JPEG, declared=10**9)
        source.routes["/endless.jpg"] = Answer(body=JPEG, size=ENDLESS, declare_length=False)
        source.routes["/page.jpg"] = Answer(body=b"<!doctype html><html><body>" + b"x" * 10000,
                                            headers={"Content-Type": "image/jpeg"})  # the header lies
        # Sniffed from the first bytes: an endless non-image is refused as a non-image, not as too large.
        source.routes["/endless.html"] = Answer(body=b"<!doctype html>" + b" " * 5000, size=ENDLESS,
                                                declare_length=False)
        for path, code in (("/declared.jpg", "PAYLOAD_TOO_LARGE"), ("/endless.jpg", "PAYLOAD_TOO_LARGE"),
                           ("/page.jpg", "UNSUPPORTED_MEDIA_TYPE"), ("/endless.html", "UNSUPPORTED_MEDIA_TYPE")):
            status = await run(api, source.url(path))
            assert (status["status"], status["error_code"], status["attempts"]) == ("failed", code, 1), status
        assert sorted(source.paths()) == ["/declared.jpg", "/endless.html", "/endless.jpg", "/page.jpg"]
        assert source.finished_bodies == 1  # only the small HTML page: the endless bodies were cut off


async def test_redirects_three_followed_four_refused_and_each_target_checked(make_settings):
    async with stack(make_settings) as (api, source):
        source.routes["/photo.jpg"] = Answer(body=JPEG)
        for hop in range(1, 5):  # /r4 -> /r3 -> /r2 -> /r1 -> /photo.jpg, relative and absolute
            target = "/photo.jpg" if hop == 1 else (f"/r{hop - 1}" if hop % 2 else source.url(f"/r{hop - 1}"))
            source.routes[f"/r{hop}"] = Answer(302 if hop % 2 else 307, headers={"Location": target})
        source.routes["/away"] = Answer(301, headers={"Location": source.url("/photo.jpg", host="localhost")})
        source.routes["/ftp"] = Answer(308, headers={"Location": "ftp://127.0.0.1/photo.jpg"})

        status = await run(api, source.url("/r3"))
        assert status["status"] == "completed" and status["attempts"] == 1, status
        assert source.paths() == ["/r3", "/r2", "/r1", "/photo.jpg"]

        source.requests.clear()
        for path, reason in (("/r4", "redirected more than 3 times"), ("/away", "'localhost' is not in"),
                             ("/ftp", "scheme 'ftp'")):
            status = await run(api, source.url(path))
            assert (status["status"], status["error_code"], status["attempts"]) == ("failed", "SOURCE_REFUSED", 1)
            assert reason in status["error"], status
        assert "/photo.jpg" not in source.paths()  # no refused target was ever requested
        assert {seen.host.split(":")[0] for seen in source.requests} == {"127.0.0.1"}


async def test_global_allowlist_refuses_at_submit(make_settings):
    async with stack(make_settings, worker=False, source_allowed_hosts="images.example.com, *.CDN.example.com") \
            as (api, source):
        body = await refused_at_submit(api, source.url("/photo.jpg"))
        assert "'127.0.0.1' is not in SOURCE_ALLOWED_HOSTS" in body["error"]["message"]
        assert source.connections == 0
    async with stack(make_settings, worker=False, source_allowed_hosts="") as (api, source):
        body = await refused_at_submit(api, source.url("/photo.jpg"))
        assert "not enabled" in body["error"]["message"]


async def test_tenant_source_hosts_extend_the_global_allowlist(make_settings, tmp_path: Path):
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(yaml.safe_dump({"tenants": [
        {"name": "catalogue", "keys": [key_digest("cat-key")], "settings": {"source_hosts": ["127.0.0.*"]}},
        {"name": "other", "keys": [key_digest("other-key")]},
        {"name": "ops", "role": "admin", "keys": [key_digest("ops-key")]}]}))
    async with stack(make_settings, source_allowed_hosts="images.example.com", tenants_file=tenants) \
            as (api, source):
        source.routes["/photo.jpg"] = Answer(body=JPEG)
        status = await run(api, source.url("/photo.jpg"), {"Authorization": "Bearer cat-key"})
        assert status["status"] == "completed", status
        for key in ("other-key", "ops-key"):  # neither another tenant nor an admin inherits the list
            await refused_at_submit(api, source.url("/photo.jpg"), {"Authorization": f"Bearer {key}"})
        assert source.paths() == ["/photo.jpg"]


async def test_with_private_networks_off_a_loopback_source_gets_no_connection(make_settings):
    async with stack(make_settings, outbound_allow_private_networks=False,
                     source_allowed_hosts="127.0.0.1,localhost") as (api, source):
        source.routes["/photo.jpg"] = Answer(body=JPEG)
        body = await refused_at_submit(api, source.url("/photo.jpg"))  # an IP literal: refused at submit
        assert "loopback address" in body["error"]["message"]
        # A name is accepted at submit (its address is unknown there) and refused by the
        # worker's guard on the resolved address, before connecting.
        status = await run(api, source.url("/photo.jpg", host="localhost"))
        assert (status["status"], status["error_code"], status["attempts"]) == ("failed", "SOURCE_REFUSED", 1)
        assert "loopback address" in status["error"], status
        assert source.connections == 0 and source.requests == []


async def test_https_only_unless_source_allow_http(make_settings):
    async with stack(make_settings, worker=False, source_allow_http=False) as (api, source):
        body = await refused_at_submit(api, source.url("/photo.jpg"))
        assert "scheme 'http'" in body["error"]["message"]


async def test_cli_submit_url_waits_for_the_result(make_settings, capsys: pytest.CaptureFixture):
    async with stack(make_settings) as (api, source):
        source.routes["/photo.jpg"] = Answer(body=JPEG)
        code = await cli.amain(["--api-url", str(api.make_url("")), "submit", "resize",
                                "--url", source.url("/photo.jpg"), "--width", "512", "--wait"])
        printed = printed_json(capsys.readouterr().out)
        assert code == 0 and printed["status"] == "completed", printed
        assert printed["result"]["width"] == 512
        source.routes["/missing.jpg"] = Answer(404)
        code = await cli.amain(["--api-url", str(api.make_url("")), "submit", "resize",
                                "--url", source.url("/missing.jpg"), "--width", "512", "--wait"])
        printed = printed_json(capsys.readouterr().out)
        assert code == 1 and printed["error_code"] == "SOURCE_REJECTED", printed


async def test_batch_items_may_name_source_urls(make_settings):
    async with stack(make_settings) as (api, source):
        source.routes["/photo.jpg"] = Answer(body=JPEG)
        jobs = [{"type": "resize", "input": {"url": source.url("/photo.jpg")}, "parameters": {"width": 48}},
                {"type": "resize", "input": {"url": "https://elsewhere.example/a.jpg"}, "parameters": {"width": 48}}]
        response = await api.post("/api/v1/jobs/batch", json={"jobs": jobs})
        body = await response.json()
        assert response.status == 200 and (body["accepted"], body["refused"]) == (1, 1), body
        accepted, refused = body["items"]
        assert refused["error"]["code"] == "SOURCE_REFUSED", refused
        status = await wait_for_status(api, accepted["job_id"])
        assert status["status"] == "completed" and status["result"]["width"] == 48, status
