"""GET /img: signed imgproxy URLs served from the cache, misses made by the real worker pool.

Real nats-server, redis-server, API and worker (tests/conftest.py); local storage, and S3
(moto) for the test that reads ETags and purges by prefix. URLs are
signed here with hmac, from imgproxy's documented algorithm (URL-safe base64, no padding, of
HMAC-SHA256(key, salt + path)), not with pixq's own code. "One job" is counted where it
would show: the tenant's job history (GET /api/v1/jobs; the test API is open, tenant "default").
"""

import asyncio
import base64
import hashlib
import hmac
import uuid

import aiohttp
import pytest
import pyvips
import redis.asyncio as redis

from api.app import create_app

from pixq.settings import ConfigError
from pixq.status import JobExists, StatusStore
from pixq.storage import make_storage
from tests.conftest import running_api, running_worker
from tests.helpers import make_image, wait_for_status
from tests.source_server import Answer, SourceServer

KEY, SALT = b"img-route-test-key", b"img-route-test-salt"
SOURCE = "photos/a.jpg"


def signed(path: str, key: bytes = KEY, salt: bytes = SALT) -> str:
    """``/img/<signature><path>`` for ``path`` (starting with "/"), as imgproxy's URL builders sign."""
    digest = hmac.new(key, salt + path.encode(), hashlib.sha256).digest()
    return "/img/" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode() + path


def img_settings(make_settings, storage_type: str = "local", **overrides):
    values = dict(img_key=KEY.hex(), img_salt=SALT.hex(), img_wait=20.0, img_auto_webp=True)
    values.update(overrides)
    return make_settings(storage_type, **values)


def source_url(settings, key: str = SOURCE) -> str:
    """The source as the URL names it: ``local://key``, or ``s3://<pixq's bucket>/key``."""
    return f"local://{key}" if settings.storage_type == "local" else f"s3://{settings.bucket_name}/{key}"


async def put_source(settings, key: str = SOURCE, data: bytes | None = None) -> None:
    storage = make_storage(settings)
    await storage.ensure_ready()
    await storage.put_bytes(key, data if data is not None else make_image(640, 480), "image/jpeg")


def size_of(data: bytes) -> tuple[int, int]:
    image = pyvips.Image.new_from_buffer(data, "")
    return image.width, image.height


async def jobs(api) -> list[dict]:
    reply = await api.get("/api/v1/jobs", params={"limit": "100"})
    assert reply.status == 200
    return (await reply.json())["items"]


async def error_code(response) -> str:
    return (await response.json())["error"]["code"]


async def test_miss_hit_conditional_coalesced_and_purge(make_settings, storage_type):
    settings = img_settings(make_settings, storage_type)
    await put_source(settings)
    url = signed(f"/rs:fit:300:200/q:80/plain/{source_url(settings)}@jpg")
    async with running_api(settings) as api, running_worker(settings):
        miss = await api.get(url)
        assert miss.status == 200, await miss.text()
        assert miss.content_type == "image/jpeg" and miss.headers["X-Cache"] == "miss"
        width, height = size_of(await miss.read())
        assert height == 200 and width in (266, 267)
        etag = miss.headers["ETag"]
        assert miss.headers["Cache-Control"] == f"public, max-age={365 * 86400}, immutable"
        assert miss.headers["Vary"] == "Accept"  # IMG_AUTO_WEBP is on
        assert len(await jobs(api)) == 1

        hit = await api.get(url)
        assert hit.status == 200 and hit.headers["X-Cache"] == "hit" and hit.headers["ETag"] == etag
        assert size_of(await hit.read()) == (width, height)
        unchanged = await api.get(url, headers={"If-None-Match": etag})
        assert unchanged.status == 304 and unchanged.headers["ETag"] == etag
        head = await api.head(url)
        assert head.status == 200 and head.headers["ETag"] == etag
        assert len(await jobs(api)) == 1  # hits made no job

        # 20 concurrent requests for one uncached URL: one job, the same bytes for all.
        other = signed(f"/rs:fill:120:120/plain/{source_url(settings)}@png")
        replies = await asyncio.gather(*(api.get(other) for _ in range(20)))
        bodies = {await reply.read() for reply in replies}
        assert [reply.status for reply in replies] == [200] * 20
        assert len(bodies) == 1 and size_of(bodies.pop()) == (120, 120)
        assert len(await jobs(api)) == 2

        purge = await api.delete("/api/v1/cache", params={"source": source_url(settings)})
        assert purge.status == 200, await purge.text()
        assert (await purge.json())["deleted"] == 2
        again = await api.get(url)
        assert again.status == 200 and again.headers["X-Cache"] == "miss"
        assert again.headers["ETag"] == etag  # same source, options and engine: the same result
        assert len(await jobs(api)) == 3

        # A changed source is a new cache key: never the stale result.
        await put_source(settings, data=make_image(320, 240))
        changed = await api.get(url)
        assert changed.status == 200 and changed.headers["ETag"] != etag
        assert changed.headers["X-Cache"] == "miss" and size_of(await changed.read())[1] == 200


async def test_two_api_replicas_missing_one_url_make_one_job(make_settings):
    """Each replica coalesces its own requests; across replicas the job id (from the cache key)
    is the same, the second status create is refused and that request waits for the first's job."""
    settings = img_settings(make_settings)
    await put_source(settings)
    url = signed(f"/rs:fit:90:90/plain/{source_url(settings)}@jpg")
    async with running_api(settings) as first, running_api(settings) as second, running_worker(settings):
        replies = await asyncio.gather(*(api.get(url) for api in (first, second) * 5))
        assert [reply.status for reply in replies] == [200] * 10
        assert len({await reply.read() for reply in replies}) == 1
        assert len(await jobs(first)) == 1


async def test_format_negotiation_by_accept(make_settings):
    settings = img_settings(make_settings, img_auto_avif=False)
    await put_source(settings)
    url = signed(f"/rs:fit:100:100/plain/local://{SOURCE}")
    async with running_api(settings) as api, running_worker(settings):
        webp = await api.get(url, headers={"Accept": "image/avif;q=0, image/webp,*/*;q=0.8"})
        assert webp.status == 200, await webp.text()
        assert webp.content_type == "image/webp" and webp.headers["Vary"] == "Accept"
        plain = await api.get(url, headers={"Accept": "image/*"})
        assert plain.status == 200 and plain.content_type == "image/jpeg"  # the source's format
        assert plain.headers["ETag"] != webp.headers["ETag"]
        refused = await api.get(url, headers={"Accept": "image/webp;q=0"})
        assert refused.content_type == "image/jpeg" and refused.headers["X-Cache"] == "hit"
        chosen = await api.get(signed(f"/rs:fit:100:100/plain/local://{SOURCE}@png"),
                               headers={"Accept": "image/webp"})
        assert chosen.status == 200 and chosen.content_type == "image/png"  # the URL's choice wins


async def test_refusals_answer_4xx_with_codes(make_settings):
    settings = img_settings(make_settings)
    await put_source(settings)
    await put_source(settings, "photos/not-an-image.jpg", b"this is not an image" * 10)
    async with running_api(settings) as api, running_worker(settings):
        forged = signed(f"/rs:fit:300:200/plain/local://{SOURCE}@jpg", key=b"another-key")
        reply = await api.get(forged)
        assert reply.status == 403 and await error_code(reply) == "SIGNATURE_INVALID"
        reply = await api.get(signed(f"/no_such_option:1/plain/local://{SOURCE}@jpg"))
        assert reply.status == 422 and await error_code(reply) == "INVALID_PARAMETERS"
        reply = await api.get(signed(f"/rs:fit:10:10/plain/s3://someone-elses-bucket/{SOURCE}@jpg"))
        assert reply.status == 422 and await error_code(reply) == "SOURCE_REFUSED"
        reply = await api.get(signed("/rs:fit:10:10/plain/local://photos/missing.jpg@jpg"))
        assert reply.status == 422 and await error_code(reply) == "INPUT_NOT_FOUND"
        bad = signed("/rs:fit:10:10/plain/local://photos/not-an-image.jpg@jpg")
        reply = await api.get(bad)
        assert reply.status == 415 and await error_code(reply) == "UNSUPPORTED_MEDIA_TYPE"  # the worker's code
        again = await api.get(bad)  # the failed job answers again: no second job
        assert again.status == reply.status
        assert len(await jobs(api)) == 1
        purge = await api.delete("/api/v1/cache", params={"source": "ftp://x/y"})
        assert purge.status == 422 and await error_code(purge) == "SOURCE_REFUSED"


async def test_job_outlasting_img_wait_answers_503_then_serves(make_settings):
    settings = img_settings(make_settings, img_wait=0.001)  # no job completes in a millisecond
    await put_source(settings)
    url = signed(f"/rs:fit:300:200/plain/local://{SOURCE}@jpg")
    async with running_api(settings) as api, running_worker(settings):
        pending = await api.get(url)
        assert pending.status == 503 and await error_code(pending) == "IMAGE_PENDING"
        assert int(pending.headers["Retry-After"]) >= 1
        made = await jobs(api)
        assert len(made) == 1
        assert (await wait_for_status(api, made[0]["job_id"]))["status"] == "completed"
        served = await api.get(url)
        assert served.status == 200 and size_of(await served.read())[1] == 200
        assert (await api.get(url)).headers["X-Cache"] == "hit"
        assert len(await jobs(api)) == 1


async def test_route_is_off_without_a_key(make_settings):
    settings = make_settings("local")
    async with running_api(settings) as api:
        reply = await api.get(signed(f"/rs:fit:300:200/plain/local://{SOURCE}@jpg"))
        assert reply.status == 404 and await error_code(reply) == "NOT_FOUND"


async def test_img_tenant_must_exist_and_purge_needs_an_admin_key(make_settings, capsys):
    keys = dict(api_keys={"user-key": "team-a"}, admin_api_keys={"admin-key": "ops"})
    with pytest.raises(ConfigError):
        create_app(img_settings(make_settings, img_tenant="nobody", **keys))
    assert "IMG_TENANT: no tenant named 'nobody'" in capsys.readouterr().err
    settings = img_settings(make_settings, img_tenant="team-a", **keys)
    async with running_api(settings) as api:
        purge = {"source": f"local://{SOURCE}"}
        reply = await api.delete("/api/v1/cache", params=purge, headers={"Authorization": "Bearer user-key"})
        assert reply.status == 403 and await error_code(reply) == "FORBIDDEN"
        reply = await api.delete("/api/v1/cache", params=purge, headers={"Authorization": "Bearer admin-key"})
        assert reply.status == 200 and (await reply.json())["deleted"] == 0
        reply = await api.get(signed(f"/rs:fit:300:200/plain/local://{SOURCE}@jpg"))  # no key: the URL is signed
        assert reply.status == 422 and await error_code(reply) == "INPUT_NOT_FOUND"  # outside team-a's prefixes


async def test_http_source_goes_through_the_guard_and_is_fetched_once(make_settings):
    guarded = dict(outbound_allow_private_networks=True, source_allow_http=True, source_allowed_hosts="127.0.0.1")
    settings = img_settings(make_settings, max_retries=0, **guarded)
    async with SourceServer() as source, running_api(settings) as api, running_worker(settings):
        source.routes["/photo.jpg"] = Answer(body=make_image(640, 480), headers={"Content-Type": "image/jpeg"})
        url = signed(f"/rs:fit:300:200/plain/{source.url('/photo.jpg')}@png")
        first = await api.get(url)
        assert first.status == 200 and first.content_type == "image/png", await first.text()
        second = await api.get(url)
        assert second.status == 200 and second.headers["X-Cache"] == "hit"
        assert source.paths() == ["/photo.jpg"]  # fetched by the worker once; the hit fetched nothing
        refused = await api.get(signed("/rs:fit:300:200/plain/https://images.example.com/a.jpg@png"))
        assert refused.status == 422 and await error_code(refused) == "SOURCE_REFUSED"

        # A job that failed on an outage (not the image's fault) is not the URL's answer for good:
        # 503, and the next request is a new job.
        source.routes["/flaky.jpg"] = [Answer(status=500), Answer(body=make_image(64, 48))]
        flaky = signed(f"/rs:fit:32:32/plain/{source.url('/flaky.jpg')}@png")
        outage = await api.get(flaky)
        assert outage.status == 503 and await error_code(outage) == "IMAGE_PENDING"
        recovered = await api.get(flaky)
        assert recovered.status == 200 and recovered.headers["X-Cache"] == "miss"
        assert [job["status"] for job in await jobs(api)].count("failed") == 1 and len(await jobs(api)) == 3


async def test_an_exclusive_create_of_a_recorded_job_writes_nothing(make_settings):
    """/img's job ids come from the cache key, so another replica may have created the job: its
    create must fail (JobExists) and leave the stored record alone, or a failed publish of the
    second request would roll back (delete) the first request's job."""
    settings = img_settings(make_settings)
    status = StatusStore(redis.Redis.from_url(settings.redis_url, decode_responses=True))
    try:
        job_id = str(uuid.uuid4())
        first = await status.create(job_id, "pipeline", "default", "req-first", exclusive=True)
        with pytest.raises(JobExists):
            await status.create(job_id, "pipeline", "default", "req-second", exclusive=True)
        stored = await status.get(job_id)
        assert stored is not None and stored["request_id"] == "req-first" == first["request_id"]
    finally:
        await status.close()


async def test_hits_redirect_to_a_presigned_get_on_s3(make_settings, storage_type):
    """IMG_HIT_REDIRECT: on S3 a hit is a 307 to a presigned GET of the cached result (the store
    serves the bytes, with the result's Content-Type and Cache-Control); the 307 is cacheable for
    half of URL_TTL at most. Local storage has no presigned URLs: hits stay 200. (moto checks no
    signature: this shows where the redirect points and what the store answers, not the signing.)"""
    settings = img_settings(make_settings, storage_type, img_hit_redirect=True, url_ttl=600.0)
    await put_source(settings)
    url = signed(f"/rs:fit:300:200/q:80/plain/{source_url(settings)}@jpg")
    async with running_api(settings) as api, running_worker(settings):
        miss = await api.get(url)  # a miss waited for its job: it answers the bytes itself
        assert miss.status == 200 and miss.headers["X-Cache"] == "miss", await miss.text()
        body, etag = await miss.read(), miss.headers["ETag"]
        hit = await api.get(url, allow_redirects=False)
        assert hit.headers["X-Cache"] == "hit" and hit.headers["ETag"] == etag
        if storage_type == "local":
            assert hit.status == 200 and await hit.read() == body
            return
        assert hit.status == 307, await hit.text()
        assert hit.headers["Cache-Control"] == "public, max-age=300"
        async with aiohttp.ClientSession() as session, session.get(hit.headers["Location"]) as stored:
            assert stored.status == 200 and await stored.read() == body
            assert stored.headers["Content-Type"] == "image/jpeg"
            assert stored.headers["Cache-Control"] == f"public, max-age={365 * 86400}, immutable"
        unchanged = await api.get(url, headers={"If-None-Match": etag}, allow_redirects=False)
        assert unchanged.status == 304


async def test_a_miss_stats_its_source_once_and_reads_its_status_once(make_settings, monkeypatch):
    """The stat that gives the cache key its source ETag also gives the submit its size check:
    one stat (on S3, one HEAD) of the source per miss, not two. And the completed event carries
    the job's document, so the miss reads the status store once (before submitting), not again
    after the event."""
    from api.context import CONTEXT
    settings = img_settings(make_settings)
    await put_source(settings)
    async with running_api(settings) as api, running_worker(settings):
        deps = api.server.app[CONTEXT].deps
        calls: list[str] = []
        for target, method in ((deps.storage, "head"), (deps.storage, "size"), (deps.status, "get")):
            original = getattr(target, method)

            async def counted(key, *args, _original=original, **kwargs):
                calls.append(key)
                return await _original(key, *args, **kwargs)
            monkeypatch.setattr(target, method, counted)
        miss = await api.get(signed(f"/rs:fit:90:90/plain/{source_url(settings)}@jpg"))
        assert miss.status == 200 and miss.headers["X-Cache"] == "miss", await miss.text()
        during_the_miss = list(calls)
        assert during_the_miss.count(SOURCE) == 1, during_the_miss
        job_id = (await jobs(api))[0]["job_id"]
        assert during_the_miss.count(job_id) == 1, during_the_miss
