"""Reading a submit request: multipart upload (streamed to a temp file) or JSON with a storage_key.

Uploads are streamed in chunks with a running byte count, so API memory does not grow with
upload size and an oversized upload is refused (413) as soon as it crosses MAX_INPUT_BYTES.
"""

import contextlib
import json
import re
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from pixq.errors import ErrorCode, PixqError

CHUNK_BYTES = 256 * 1024
FIELD_MAX_CHARS = 64 * 1024
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")

_MALFORMED = (ValueError, RuntimeError, TypeError, AssertionError, LookupError, zlib.error, HttpProcessingError)
"""What aiohttp's multipart reader raises on a body that is not what its headers say
(missing or wrong boundary, bad part headers, unknown Content-(Transfer-)Encoding, bad
base64/deflate data, truncation): the client's mistake, so 400, never a 500."""


@contextlib.contextmanager
def _malformed_multipart() -> Iterator[None]:
    try:
        yield
    except _MALFORMED as exc:
        raise PixqError(ErrorCode.INVALID_REQUEST, f"malformed multipart body: {_short(exc)}") from None


def _short(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200] or type(exc).__name__


def _parse_json(data: str | bytes, what: str) -> Any:
    """json.loads, with every way a client's text can fail as INVALID_REQUEST: bad syntax or
    encoding, an integer over Python's 4300-digit limit (a plain ValueError), deep nesting."""
    try:
        return json.loads(data)
    except RecursionError:
        raise PixqError(ErrorCode.INVALID_REQUEST, f"{what} is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors too
        raise PixqError(ErrorCode.INVALID_REQUEST, f"{what} is not valid JSON: {_short(exc)}") from None


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
        with handle, _malformed_multipart():
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
    with _malformed_multipart():
        reader = await request.multipart()
    submit = SubmitRequest(parameters={})
    try:
        while True:
            with _malformed_multipart():
                part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader) or not part.name:
                continue
            if part.name == "file":
                if submit.upload is not None:
                    raise PixqError(ErrorCode.INVALID_REQUEST, "send exactly one file part")
                submit.upload = await _stream_to_file(part, max_bytes)
                content_type = part.headers.get("Content-Type", "").partition(";")[0].strip()
                if _MEDIA_TYPE.match(content_type):  # stored as object metadata: plain ASCII type/subtype only
                    submit.content_type = content_type
                continue
            with _malformed_multipart():
                text = (await part.read(decode=True)).decode("utf-8", "replace")
            if len(text) > FIELD_MAX_CHARS:
                raise PixqError(ErrorCode.INVALID_REQUEST, f"field {part.name!r} is too long")
            if part.name in json_fields:
                submit.extra[part.name] = _parse_json(text, f"field {part.name!r}")
            elif text != "":
                submit.parameters[part.name] = text
    except BaseException:
        submit.discard()
        raise
    if submit.upload is None:
        raise PixqError(ErrorCode.INVALID_REQUEST, "multipart requests need a 'file' part")
    return submit


def _charset(content_type: str) -> str:
    """The charset parameter of a Content-Type, or utf-8 (JSON's own encoding, RFC 8259)."""
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').strip()
    return "utf-8"


async def _read_json(request: web.Request, content_type: str) -> SubmitRequest:
    charset = _charset(content_type)
    raw = await request.read()  # over client_max_size: aiohttp's 413, rendered as PAYLOAD_TOO_LARGE
    try:
        text = raw.decode(charset)
    except UnicodeDecodeError:
        raise PixqError(ErrorCode.INVALID_REQUEST, f"body is not valid {charset[:40]!r}") from None
    except (LookupError, ValueError):  # unknown codec, a bytes-to-bytes one (base64), or junk in the name
        raise PixqError(ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                        f"unsupported charset {charset[:40]!r}; send JSON as UTF-8") from None
    body = _parse_json(text, "body")
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
    content_type = request.headers.get("Content-Type", "")
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        return await _read_multipart(request, max_bytes, set(json_fields))
    if media_type == "application/json":
        return await _read_json(request, content_type)
    raise PixqError(ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                    "send multipart/form-data with a 'file' part, or application/json with input.storage_key")
