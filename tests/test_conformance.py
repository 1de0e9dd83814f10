"""The live API conforms to its OpenAPI document: schemathesis drives every operation.

ONE real stack for the module: nats-server, redis-server, pixq-api and one pixq-worker as
processes (tests/stack.py), with a user key, an admin key and a preset. Before generation a
few real jobs (resize, pipeline, analyze, a preset, and a batch) are submitted and awaited,
so list, status, batch and delivery answers carry real documents (results, variants,
analysis, preset), and generated path ids are sometimes swapped for those real ids. Before each request to a
/api/v1/dlq route a fresh dead-lettered job is published to PIXQ_DLQ (as a worker would),
and its id is one of the choices for the path.

Every operation of the generated document (api.openapi.build, the one served) gets
``EXAMPLES`` generated requests (derandomized, no example database), each sent with the key
its route needs, or sometimes no key or a wrong one. Each answer must pass schemathesis'
checks: no 5xx, a documented status code, a documented content type, the documented
headers, and a body that validates against the documented schema.

The SSE routes stream until the client leaves: their requests are sent with
``stream=True`` and only the status line and headers are read (``_call``), which is all the
checks look at for a text/event-stream answer; a non-200 answer is read whole as usual.
"""

import asyncio
import json
import time
import uuid
from collections.abc import Iterator

import nats
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings, strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                               response_schema_conformance, status_code_conformance)

from api.openapi import build
from pixq.jobs import JobInput, JobMessage, JobMetadata, JobType, utc_now
from pixq.spec import to_pipeline
from tests.helpers import make_image
from tests.servers import nats_server, redis_server
from tests.stack import Stack, stack_env
from worker.dead_letter import dlq_entry, publish_dead

USER_KEY = "user-key-conformance"
ADMIN_KEY = "admin-key-conformance"
EXAMPLES = 25
"""Generated requests per operation (each is one real HTTP request)."""
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
SSE_PATHS = {"/api/v1/events", "/api/v1/jobs/{job_id}/events"}

schema = schemathesis.openapi.from_dict(build())


class Live:
    """The running stack and the ids of the jobs and batch seeded into it."""

    def __init__(self, url: str, nats_url: str, job_ids: list[str], batch_id: str) -> None:
        self.url = url
        self.nats_url = nats_url
        self.job_ids = job_ids
        self.batch_id = batch_id
        self.session = requests.Session()

    def dead_letter(self) -> str:
        """A fresh, replayable DLQ entry (as a worker writes it), so the admin routes answer
        with real entries even after a generated purge emptied the queue; its id."""
        job_id = str(uuid.uuid4())
        message = JobMessage(job_id=job_id, type=JobType.RESIZE, tenant="team-a",
                             spec=to_pipeline("resize", {"width": 8}), input=JobInput(storage_key="inputs/none"),
                             metadata=JobMetadata(created_at=utc_now(), request_id="conformance"))
        entry = dlq_entry(message.model_dump(mode="json"), "PROCESSING_FAILED", "seeded", 3,
                          "seeded by tests/test_conformance.py")

        async def publish() -> None:
            nc = await nats.connect(self.nats_url)
            try:
                await publish_dead(nc.jetstream(), entry)
            finally:
                await nc.close()

        asyncio.run(publish())
        return job_id


def _await_terminal(url: str, job_id: str) -> dict:
    """Long-poll (the API's own If-None-Match + ?wait=) until the job is terminal."""
    headers = {"Authorization": f"Bearer {USER_KEY}"}
    reply = requests.get(f"{url}/api/v1/jobs/{job_id}", headers=headers, timeout=30)
    document, etag = reply.json(), reply.headers["ETag"]
    deadline = time.monotonic() + 60
    while document["status"] not in ("completed", "failed") and time.monotonic() < deadline:
        reply = requests.get(f"{url}/api/v1/jobs/{job_id}", params={"wait": "30s"}, timeout=40,
                             headers={**headers, "If-None-Match": etag})
        if reply.status_code == 200:
            document, etag = reply.json(), reply.headers["ETag"]
    assert document["status"] == "completed", document
    return document


def _seed(url: str) -> tuple[list[str], str]:
    """Real jobs of every kind, completed by the worker, and one batch."""
    auth = {"Authorization": f"Bearer {USER_KEY}"}
    image = make_image(64, 48)
    submits = [("resize", {"width": "32"}), ("analyze", {}),
               ("jobs", {"spec": json.dumps({"variants": [{"name": "small", "width": 16}, {"name": "big"}],
                                             "analyze": {}})}),
               ("jobs", {"preset": "thumb"})]
    job_ids = []
    for route, fields in submits:
        reply = requests.post(f"{url}/api/v1/{route}", headers=auth, data=fields,
                              files={"file": ("in.jpg", image, "image/jpeg")}, timeout=30)
        assert reply.status_code == 202, reply.text
        job_ids.append(reply.json()["job_id"])
    first = _await_terminal(url, job_ids[0])
    batch = requests.post(f"{url}/api/v1/jobs/batch", headers=auth, timeout=30, json={"jobs": [
        {"type": "resize", "input": {"storage_key": first["result"]["storage_key"]}, "parameters": {"width": 8}},
        {"type": "crop", "input": {"storage_key": "nowhere"}, "parameters": {"width": 8, "height": 8}}]})
    assert batch.status_code == 200, batch.text
    for job_id in job_ids[1:]:
        _await_terminal(url, job_id)
    return job_ids, batch.json()["batch_id"]


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("conformance")
    presets = tmp / "presets.yaml"
    presets.write_text('presets: [{name: thumb, version: "2026-11", variants: [{name: t, width: 8}]}]\n')
    nats, redis = nats_server(tmp), redis_server(tmp)
    stack = Stack(stack_env(nats.port, redis.port, tmp, API_KEYS=f"team-a={USER_KEY}",
                            ADMIN_API_KEYS=f"ops={ADMIN_KEY}", PRESETS_FILE=str(presets), LOG_LEVEL="warning"), tmp)
    try:
        stack.start_api()
        stack.start_worker()
        yield Live(stack.api_url, stack.env["NATS_URL"], *_seed(stack.api_url))
    finally:
        stack.stop()
        nats.stop()
        redis.stop()


def _call(live: Live, case, headers: dict[str, str]) -> requests.Response:
    """Send the case; an SSE answer is closed once its status line and headers are in."""
    if case.operation.path not in SSE_PATHS:
        return case.call(base_url=live.url, session=live.session, headers=headers, timeout=30)
    kwargs = case.as_transport_kwargs(base_url=live.url, headers=headers)
    with requests.Session() as session:  # its own connection, closed with the session: never reused mid-stream
        response = session.request(**kwargs, stream=True, timeout=30)
        if response.status_code == 200:
            response._content = b""  # the stream goes on for as long as the client stays
            response._content_consumed = True
        else:
            response.content  # noqa: B018 - read the whole (error) body
        response.close()
    return response


def _auth(case, choice: str) -> dict[str, str]:
    needs_admin = case.operation.path.startswith("/api/v1/dlq")
    if choice == "none":
        return {}
    if choice == "wrong":
        return {"Authorization": "Bearer not-a-key"}
    if choice == "other":  # the other role: an admin key on user routes, a user key on admin routes
        return {"Authorization": f"Bearer {USER_KEY if needs_admin else ADMIN_KEY}"}
    return {"Authorization": f"Bearer {ADMIN_KEY if needs_admin else USER_KEY}"}


@schema.given(data=st.data())
@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_every_operation_conforms(case, data, live: Live) -> None:
    dead = [live.dead_letter()] if case.operation.path.startswith("/api/v1/dlq") else []
    for name in ("job_id", "batch_id"):
        if name in (case.path_parameters or {}):
            real = (dead or live.job_ids) if name == "job_id" else [live.batch_id]
            case.path_parameters[name] = data.draw(st.sampled_from([case.path_parameters[name], *real]),
                                                   label=name)
    choice = data.draw(st.sampled_from(["right", "right", "right", "none", "wrong", "other"]), label="auth")
    headers = _auth(case, choice)
    case.headers = {name: value for name, value in (case.headers or {}).items() if name.lower() != "authorization"}
    response = _call(live, case, headers)
    case.validate_response(response, checks=CHECKS, headers=headers)


def test_the_served_document_is_the_generated_one(live: Live) -> None:
    reply = requests.get(f"{live.url}/api/v1/openapi.json", timeout=10)
    assert reply.status_code == 200 and reply.json() == build()
