"""The public JSON shape of a job status: what GET /api/v1/jobs/{id}, SSE events and webhooks carry.

One function builds it from a stored status record, so the three can never disagree.
Download URLs are not stored anywhere: presigned S3 URLs and local signed links expire, so
``mint`` makes fresh ones each time a document leaves pixq (None leaves them out, as in the
events stored in PIXQ_EVENTS; ``with_urls`` adds them when an event is sent).
"""

import json
from collections.abc import Callable
from typing import Any

from pixq.jobs import JobType
from pixq.settings import Settings
from pixq.signing import signed_path
from pixq.storage import Storage

Mint = Callable[[str], str]
"""Storage key -> a download URL valid for URL_TTL."""

_OUTPUT_FIELDS = ("storage_key", "width", "height", "format", "bytes")


def download_minter(storage: Storage, settings: Settings, origin: str) -> Mint:
    """Download URLs valid for URL_TTL: a presigned GET (S3), or a signed link to the API's
    /files at ``origin`` (local storage): the request's origin in the API, PUBLIC_URL in a
    worker sending a webhook."""
    def mint(storage_key: str) -> str:
        url = storage.presigned_url(storage_key, settings.url_ttl)
        if url is not None:
            return url
        return origin + signed_path(settings.signing_key(), storage_key, settings.url_ttl)

    return mint


def public_status(record: dict[str, Any], mint: Mint | None = None) -> dict[str, Any]:
    """``{job_id, type, status, attempts, created_at, updated_at, result, error, error_code}``;
    ``result`` is the first output's ``{storage_key, width, height, format, bytes}`` (a pipeline:
    also ``variants``; an analyze job: ``variants`` empty) with ``input`` (the input's
    metadata), for an analyze job, ``analysis``, and ``reused_from`` (the earlier job whose
    outputs were copied instead of processing, worker.reuse)
    (plus ``next_attempt_at`` while retrying, ``batch_id`` for a batch's job, ``preset``
    ``{name, version}`` for a job compiled from a preset, and ``priority``, absent on jobs
    recorded before priorities existed)."""
    result = None
    stored = record.get("result")
    if stored and stored.get("variants"):
        variants = [{"name": v["name"], **{k: v[k] for k in _OUTPUT_FIELDS}} for v in stored["variants"]]
        result = {k: variants[0][k] for k in _OUTPUT_FIELDS}
        if record.get("type") == JobType.PIPELINE.value:
            result["variants"] = variants
    elif stored:
        result = {"variants": []}  # an analyze job (or a pipeline of analysis only) writes no image
    if result is not None:
        # What the input is (every job completed since worker.imaging.metadata), and the analysis.
        for name in ("input", "analysis", "reused_from"):
            if stored.get(name) is not None:
                result[name] = stored[name]
    body = {
        "job_id": record["job_id"],
        "type": record.get("type"),
        "status": record.get("status"),
        "attempts": record.get("attempts", 0),
        "created_at": record.get("created_at"),
        "updated_at": record.get("updated_at"),
        "result": result,
        "error": record.get("error"),
        "error_code": record.get("error_code"),
    }
    if record.get("next_attempt_at"):
        body["next_attempt_at"] = record["next_attempt_at"]
    if record.get("batch_id"):
        body["batch_id"] = record["batch_id"]
    if record.get("preset"):
        body["preset"] = _preset(record["preset"])
    if record.get("priority"):
        body["priority"] = record["priority"]
    return with_urls(body, mint) if mint is not None else body


def _preset(stored: Any) -> Any:
    """``{"name", "version"}`` of the preset a job ran (stored as JSON in the status record)."""
    if isinstance(stored, str):
        try:
            return json.loads(stored)
        except ValueError:
            return None
    return stored


def with_urls(document: dict[str, Any], mint: Mint) -> dict[str, Any]:
    """A copy of a public status document with a fresh ``url`` on its result and each variant."""
    result = document.get("result")
    if not result:
        return document
    if "storage_key" not in result:
        return document  # nothing to download (an analyze job)
    result = {"url": mint(result["storage_key"]), **result}
    if "variants" in result:
        result["variants"] = [{"name": v["name"], "url": mint(v["storage_key"]),
                               **{k: v[k] for k in _OUTPUT_FIELDS}} for v in result["variants"]]
    return {**document, "result": result}
