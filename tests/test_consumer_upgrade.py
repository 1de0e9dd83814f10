"""The workers own the pixq-workers consumer: the API never creates or changes it, and a worker
started with another MAX_RETRIES / ACK_WAIT brings the existing consumer to its settings,
which nats-server then enforces (max_deliver) even with no pixq worker running."""

import asyncio
import json

import nats as nats_client
import pytest
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from pixq import names, queue
from pixq.errors import PixqError
from tests.conftest import running_api, running_worker
from tests.faults.harness import wait_until
from tests.helpers import form, make_image, wait_for_status
from worker.main import serve


async def test_worker_upgrade_from_five_to_two_retries_updates_the_consumer(make_settings, nats):
    nc = await nats_client.connect(f"nats://127.0.0.1:{nats.port}")
    js = nc.jetstream()

    async def consumer():
        return (await js.consumer_info(names.JOBS_STREAM, names.WORKERS_CONSUMER)).config

    async def consumer_reaches(max_deliver: int, ack_wait: float):
        """running_worker returns before the worker is up: await its consumer set-up."""
        async def check():
            try:
                config = await consumer()
            except NotFoundError:
                return None
            return (config.max_deliver, config.ack_wait) == (max_deliver, ack_wait) and config
        return await wait_until(check, 20, f"pixq-workers with max_deliver={max_deliver} ack_wait={ack_wait}")

    try:
        # An API alone (its MAX_RETRIES=7 means nothing to it) creates the streams, not the consumer.
        async with running_api(make_settings("local", max_retries=7, ack_wait=9.0)):
            with pytest.raises(NotFoundError):
                await consumer()

        # Release N: MAX_RETRIES=5.
        async with running_worker(make_settings("local", max_retries=5, ack_wait=5.0)):
            await consumer_reaches(6, 5.0)

        # Release N+1: MAX_RETRIES=2, ACK_WAIT=4s; the existing consumer is updated in place.
        upgraded = make_settings("local", max_retries=2, ack_wait=4.0)
        async with running_worker(upgraded):
            await consumer_reaches(3, 4.0)
        async with running_api(make_settings("local", max_retries=7, ack_wait=9.0)) as api:
            config = await consumer()
            assert (config.max_deliver, config.ack_wait) == (3, 4.0), "an API start changed the consumer"

            # nats-server itself now stops after 3 deliveries: a job that is only ever nak'ed
            # (no pixq worker running) is delivered 3 times, then a MAX_DELIVERIES advisory is stored.
            accepted = await api.post("/api/v1/resize", data=form(make_image(64, 48), width=16))
            assert accepted.status == 202, await accepted.text()
            job_id = (await accepted.json())["job_id"]
            puller = await js.pull_subscribe_bind(durable=names.WORKERS_CONSUMER, stream=names.JOBS_STREAM)
            deliveries = []

            async def advisory_stored():
                try:
                    messages = await puller.fetch(1, timeout=0.5)
                except NatsTimeout:
                    messages = []
                for message in messages:
                    deliveries.append(message.metadata.num_delivered)
                    await message.nak()
                return (await js.stream_info(names.ADVISORY_STREAM)).state.messages == 1
            await wait_until(advisory_stored, 20, "the MAX_DELIVERIES advisory after the 3rd delivery")
            await puller.unsubscribe()
            assert deliveries == [1, 2, 3], deliveries
            advisory = json.loads((await js.get_msg(names.ADVISORY_STREAM, 1)).data)
            assert advisory["deliveries"] == 3 and advisory["consumer"] == names.WORKERS_CONSUMER

            # A worker of the new release dead-letters it (attempts = the 3 deliveries).
            async with running_worker(upgraded):
                dead = await wait_for_status(api, job_id)
            assert dead["status"] == "failed" and dead["error_code"] == "DEAD_LETTERED", dead
            assert dead["attempts"] == 3, dead
    finally:
        await nc.close()


async def test_a_consumer_that_cannot_be_updated_stops_the_worker_at_start(make_settings, nats):
    """A change nats-server cannot apply in place (here: max_waiting) is not silently kept:
    the worker refuses to start and says how to recover."""
    settings = make_settings("local")
    nc = await nats_client.connect(f"nats://127.0.0.1:{nats.port}")
    try:
        js = nc.jetstream()
        await queue.ensure_streams(js, settings)
        await js.add_consumer(names.JOBS_STREAM, ConsumerConfig(
            durable_name=names.WORKERS_CONSUMER, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
            max_waiting=16))
        with pytest.raises(PixqError) as refused:
            await asyncio.wait_for(serve(settings, asyncio.Event()), 30)
        assert "cannot be updated" in refused.value.message and "delete it" in refused.value.message
    finally:
        await nc.close()
