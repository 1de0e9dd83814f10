"""The API's events hub reads PIXQ_EVENTS only while someone listens (api.events_hub).

Real nats-server, redis-server and API apps; consumers are read from JetStream itself. Proven
here: with no listener the API has no consumer on PIXQ_EVENTS; an SSE stream or a long-poll
makes one, gone once it ends and EVENTS_HUB_LINGER passes; events stored right after a stream
opens on a freshly started consumer all reach it (no gap); streams opening at once share one
consumer; a listener registering while the hub stops gets a running one; a bad
EVENTS_HUB_LINGER stops the process at start, naming the variable.
"""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from nats.js import JetStreamContext

from api.events_hub import ALL, EVENTS_HUB, EventHub
from pixq import events as pixq_events
from pixq import names, queue
from pixq.settings import ConfigError, load_settings
from tests.conftest import running_api
from tests.helpers import form, make_image
from tests.test_sse import bearer, job_of, open_stream

ACME = "acme-key"


@pytest.fixture
def settings(make_settings):
    """Linger 0: the consumer goes as soon as its last listener leaves."""
    return make_settings("local", api_keys={ACME: "acme"}, events_heartbeat=0.3, events_hub_linger=0.0)


@pytest.fixture
async def js(settings) -> AsyncIterator[JetStreamContext]:
    """A client of the test's NATS, as an operator's tools would read it."""
    nc = await queue.connect(settings, "test-events-hub")
    try:
        await queue.ensure_streams(nc.jetstream(), settings)
        yield nc.jetstream()
    finally:
        await queue.close(nc)


async def hub_consumers(js: JetStreamContext) -> list[str]:
    """PIXQ_EVENTS's push consumers without a durable name: the hubs' tails (replays pull;
    the webhook deliverer's is durable)."""
    return [info.name for info in await js.consumers_info(names.EVENTS_STREAM)
            if info.config.deliver_subject and not info.config.durable_name]


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0) -> None:
    """Until ``check()`` holds: a condition polled with a deadline, never a sleep to synchronise."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"not within {timeout}s: {what}") from None


async def consumer_count_is(js: JetStreamContext, count: int) -> None:
    async def check() -> bool:
        return len(await hub_consumers(js)) == count
    await until(check, f"{count} hub consumer(s) on {names.EVENTS_STREAM}")


async def publish_queued(js: JetStreamContext, tenant: str = "acme") -> str:
    job_id = str(uuid.uuid4())
    await pixq_events.publish_job_event(js, {"job_id": job_id, "status": "queued", "tenant": tenant})
    return job_id


async def test_no_listener_no_consumer_and_a_stream_starts_one_until_it_ends(settings, js):
    async with running_api(settings) as api:
        response = await api.post("/api/v1/resize", data=form(make_image(120, 90), width=40), headers=bearer(ACME))
        assert response.status == 202, await response.text()
        await publish_queued(js)
        assert await hub_consumers(js) == []  # the API stores events and reads none of them
        async with open_stream(api, "/api/v1/events", bearer(ACME)) as stream:
            assert len(await hub_consumers(js)) == 1  # open before the stream's headers came back
            job_id = await publish_queued(js)
            assert job_of(await stream.event()) == job_id
        await consumer_count_is(js, 0)
        assert api.server.app[EVENTS_HUB].listeners == 0


async def test_a_long_poll_starts_one(settings, js):
    async with running_api(settings) as api:
        response = await api.post("/api/v1/resize", data=form(make_image(120, 90), width=40), headers=bearer(ACME))
        job_id = (await response.json())["job_id"]
        etag = (await api.get(f"/api/v1/jobs/{job_id}", headers=bearer(ACME))).headers["ETag"]
        assert await hub_consumers(js) == []
        waiting = asyncio.create_task(api.get(f"/api/v1/jobs/{job_id}?wait=30s",
                                              headers={**bearer(ACME), "If-None-Match": etag}))
        await consumer_count_is(js, 1)
        # An event past the job's position wakes the wait; the store still says queued: 304.
        await pixq_events.publish_job_event(js, {"job_id": job_id, "status": "processing", "tenant": "acme"})
        answered = await asyncio.wait_for(waiting, 20)
        assert answered.status == 304
        await consumer_count_is(js, 0)


async def test_events_right_after_a_fresh_start_reach_the_stream(settings, js):
    """Each stream opens with no consumer running (linger 0), so its registration starts one;
    events stored the moment the stream answers must all arrive: the start is over by then."""
    async with running_api(settings) as api:
        for _ in range(3):
            await consumer_count_is(js, 0)
            async with open_stream(api, "/api/v1/events", bearer(ACME)) as stream:
                published = [await publish_queued(js) for _ in range(5)]
                received = [job_of(await stream.event(timeout=10)) for _ in published]
            assert received == published
        assert api.server.app[EVENTS_HUB].starts == 3


async def test_streams_opening_at_once_share_one_consumer(settings, js):
    async with running_api(settings) as api, contextlib.AsyncExitStack() as streams:
        opened = await asyncio.gather(*(streams.enter_async_context(open_stream(api, "/api/v1/events", bearer(ACME)))
                                        for _ in range(4)))
        assert len(await hub_consumers(js)) == 1
        assert api.server.app[EVENTS_HUB].starts == 1
        job_id = await publish_queued(js)
        for stream in opened:
            assert job_of(await stream.event()) == job_id


async def test_an_event_stored_right_after_registering_reaches_the_listener(js):
    """Registration returns once the consumer runs: nothing the listener is owed is stored
    before the consumer's start sequence."""
    hub = EventHub(js, linger=0)
    try:
        for _ in range(3):  # each time a fresh consumer (linger 0)
            async with hub.listen(ALL) as listener:
                job_id = await publish_queued(js)
                event = await listener.next(10)
                assert event is not None and event.target == job_id
        assert hub.starts == 3
    finally:
        await hub.stop()


async def test_hub_registrations_at_once_start_one_consumer(js):
    hub = EventHub(js, linger=0)
    try:
        async with contextlib.AsyncExitStack() as registered:
            listeners = await asyncio.gather(*(registered.enter_async_context(hub.listen(ALL)) for _ in range(5)))
            assert hub.starts == 1 and len(await hub_consumers(js)) == 1
            job_id = await publish_queued(js)
            for listener in listeners:
                assert (await listener.next(10)).target == job_id
        await consumer_count_is(js, 0)
    finally:
        await hub.stop()


async def test_a_listener_registering_while_the_hub_stops_gets_a_running_one(js):
    hub = EventHub(js, linger=0)
    try:
        async with hub.listen(ALL):
            assert hub.running
        # The last listener left: with linger 0 the unsubscribe is under way now, not done.
        assert not hub.running
        async with hub.listen(ALL) as listener:
            assert hub.running and hub.starts == 2
            assert len(await hub_consumers(js)) == 1  # the old one deleted first, then the new one
            job_id = await publish_queued(js)
            event = await listener.next(10)
            assert event is not None and event.target == job_id
        await consumer_count_is(js, 0)
    finally:
        await hub.stop()


async def test_a_listener_after_shutdown_is_ended_and_starts_nothing(js):
    hub = EventHub(js, linger=30)
    async with hub.listen(ALL) as listener:
        await hub.stop()
        assert listener.ended == "shutdown"
    async with hub.listen(ALL) as late:
        assert late.ended == "shutdown"
    assert await hub_consumers(js) == [] and hub.starts == 1


@pytest.mark.parametrize("value", ["-1s", "soon"])
def test_a_bad_linger_stops_the_process_naming_it(monkeypatch, capsys, value):
    monkeypatch.setenv("EVENTS_HUB_LINGER", value)
    with pytest.raises(ConfigError):
        load_settings()
    assert "EVENTS_HUB_LINGER" in capsys.readouterr().err


def test_linger_reads_durations(monkeypatch):
    monkeypatch.setenv("EVENTS_HUB_LINGER", "500ms")
    assert load_settings().events_hub_linger == 0.5
    monkeypatch.delenv("EVENTS_HUB_LINGER")
    assert load_settings().events_hub_linger == 30.0
