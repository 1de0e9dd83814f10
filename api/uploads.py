"""Reading a submit request: multipart upload (streamed to a temp file) or JSON with a storage_key.

Uploads are streamed in chunks with a running byte count, so API memory does not grow with
upload size and an oversized upload is refused (413) as soon as it crosses MAX_INPUT_BYTES.
"""

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from pixq.errors import ErrorCode, PixqError

CHUNK_BYTES = 256 * 1024


@dataclass
class SubmitRequest:
    """Parameters plus either an uploaded file (``upload``) or an existing ``storage_key``."""

    parameters: dict[str, Any]
    upload: Path | None = None
    storage_key: str | None = None
    content_type: str = "application/octet-stream"
    extra: dict[str, Any] = field(default_factory=dict)

    def discard(self) -> None:
        if self.upload is not None:
            self.upload.unlink(missing_ok=True)


async def _stream_to_file(part: BodyPartReader, max_bytes: int) -> Path:
    handle = tempfile.NamedTemporaryFile(prefix="pixq-upload-", delete=False)
    path = Path(handle.name)
    written = 0
    try:
        with handle:
            while chunk := await part.read_chunk(CHUNK_BYTES):
                written += len(chunk)
                if written > max_bytes:
                    raise PixqError(ErrorCode.PAYLOAD_TOO_LARGE,
                                    f"upload is larger than MAX_INPUT_BYTES={max_bytes}")
                handle.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if written == 0:
        path.unlink(missing_ok=True)
        raise PixqError(ErrorCode.INVALID_REQUEST, "the file part is empty")
    return path


async def _read_multipart(request: web.Request, max_bytes: int, json_fields: set[str]) -> SubmitRequest:
    reader = await request.multipart()
    submit = SubmitRequest(parameters={})
    try:
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or not part.name:
                continue
            if part.name == "file":
                if submit.upload is not None:
                    raise PixqError(ErrorCode.INVALID_REQUEST, "send exactly one file part")
                submit.upload = await _stream_to_file(part, max_bytes)
                submit.content_type = part.headers.get("Content-Type", submit.content_type)
                continue
            text = (await part.read(decode=True)).decode("utf-8", "replace")
            if len(text) > 64 * 1024:
                raise PixqError(ErrorCode.INVALID_REQUEST, f"field {part.name!r} is too long")
            if part.name in json_fields:
                try:
                    submit.extra[part.name] = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise PixqError(ErrorCode.INVALID_REQUEST, f"field {part.name!r} is not JSON: {exc.msg}") from None
            elif text != "":
                submit.parameters[part.name] = text
    except BaseException:
        submit.discard()
        raise
    if submit.upload is None:
        raise PixqError(ErrorCode.INVALID_REQUEST, "multipart requests need a 'file' part")
    return submit


async def _read_json(request: web.Request) -> SubmitRequest:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PixqError(ErrorCode.INVALID_REQUEST, f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise PixqError(ErrorCode.INVALID_REQUEST, "body must be a JSON object")
    source = body.get("input")
    if not isinstance(source, dict) or not isinstance(source.get("storage_key"), str) or not source["storage_key"]:
        raise PixqError(ErrorCode.INVALID_REQUEST, 'JSON requests need "input": {"storage_key": "..."}')
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise PixqError(ErrorCode.INVALID_REQUEST, '"parameters" must be an object')
    extra = {key: value for key, value in body.items() if key not in ("input", "parameters")}
    return SubmitRequest(parameters=parameters, storage_key=source["storage_key"], extra=extra)


async def read_submit_request(request: web.Request, max_bytes: int,
                              json_fields: frozenset[str] = frozenset()) -> SubmitRequest:
    """Parse either request shape; anything else is 415."""
    # Not request.content_type: aiohttp parses that with the email package (~0.8 ms a request).
    media_type = request.headers.get("Content-Type", "").partition(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        return await _read_multipart(request, max_bytes, set(json_fields))
    if media_type == "application/json":
        return await _read_json(request)
    raise PixqError(ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                    "send multipart/form-data with a 'file' part, or application/json with input.storage_key")
