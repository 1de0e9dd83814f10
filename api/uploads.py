"""Reading a submit request: multipart upload (streamed to a temp file) or JSON with a storage_key.

Uploads are streamed in chunks with a running byte count, so API memory does not grow with
upload size and an oversized upload is refused (413) as soon as it crosses MAX_INPUT_BYTES.
A single submit's multipart body, and a local direct upload's (api.handlers.uploads), is parsed
by ``api.multipart.FormStream`` straight off the request stream (one copy per uploaded byte: the CPU cost issue
16 is about); batches still use aiohttp's MultipartReader (``read_batch_request``).
"""

import contextlib
import json
import os
import re
import tempfile
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from api.multipart import FormStream, boundary_of
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
    """Parameters plus exactly one input: an uploaded file (``upload``), an existing
    ``storage_key``, a direct upload's ``upload_id``, or a ``source_url`` the worker fetches."""

    parameters: dict[str, Any]
    upload: Path | None = None
    storage_key: str | None = None
    upload_id: str | None = None
    source_url: str | None = None
    content_type: str = "application/octet-stream"
    extra: dict[str, Any] = field(default_factory=dict)

    def discard(self) -> None:
        if self.upload is not None:
            self.upload.unlink(missing_ok=True)


def open_form(request: web.Request, max_request_bytes: int) -> FormStream:
    """The request's multipart/form-data body as a FormStream held to MAX_REQUEST_BYTES."""
    with _malformed_multipart():
        return FormStream(request.content, boundary_of(request.headers.get("Content-Type", "")),
                          _Budget(max_request_bytes, "request body"))


async def spool_part(form: FormStream, max_bytes: int, directory: Path | None = None,
                     prefix: str = "pixq-upload-") -> Path:
    """The current (file) part into a new file in ``directory`` (else the system's temp dir):
    PAYLOAD_TOO_LARGE past ``max_bytes`` (the request's budget is counted by ``form``),
    INVALID_REQUEST when empty. Nothing is left behind on failure."""
    # Not tempfile.mkstemp: its random name costs more CPU than the rest of a small upload's
    # file handling (0.06 vs 0.013 ms with close and unlink); a uuid4 name with O_EXCL is as safe.
    path = Path(directory or tempfile.gettempdir()) / f"{prefix}{uuid.uuid4().hex}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    written = 0
    pending: list[memoryview] = []
    pending_bytes = 0

    def flush() -> None:
        nonlocal pending_bytes
        done = os.writev(fd, pending)
        if done < pending_bytes:  # a short write (disk nearly full): the rest one piece at a time
            rest = memoryview(b"".join(pending))[done:]
            while rest:
                rest = rest[os.write(fd, rest):]
        pending.clear()
        pending_bytes = 0

    def write(data: memoryview) -> None:
        # Gathered, then written with one writev() per SPOOL_WRITE_BYTES: the slices a chunk is
        # cut into (and a client's tiny chunks) would otherwise each be a write() at an odd offset.
        nonlocal written, pending_bytes
        written += len(data)
        if written > max_bytes:
            raise PixqError(ErrorCode.PAYLOAD_TOO_LARGE, f"upload is larger than MAX_INPUT_BYTES={max_bytes}")
        pending.append(data)
        pending_bytes += len(data)
        if pending_bytes >= SPOOL_WRITE_BYTES or len(pending) >= SPOOL_WRITE_PIECES:
            flush()

    try:
        try:
            with _malformed_multipart():
                await form.stream_body(write)
            if pending:
                flush()
        finally:
            os.close(fd)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if written == 0:
        path.unlink(missing_ok=True)
        raise PixqError(ErrorCode.INVALID_REQUEST, "the file part is empty")
    return path


SPOOL_WRITE_BYTES = 256 * 1024
SPOOL_WRITE_PIECES = 256
"""Below IOV_MAX (1024): writev() takes at most that many pieces."""


async def _read_multipart(request: web.Request, max_bytes: int, json_fields: set[str],
                          max_request_bytes: int) -> SubmitRequest:
    form = open_form(request, max_request_bytes)
    submit = SubmitRequest(parameters={})
    try:
        while True:
            with _malformed_multipart():
                part = await form.next_part()
            if part is None:
                break
            name = part.name  # parsed from Content-Disposition on every access: read once
            if not name or part.headers.get("Content-Type", "").lower().startswith("multipart/"):
                continue  # nested multipart bodies are not read (the part is skipped)
            if name == "file":
                if submit.upload is not None:
                    raise PixqError(ErrorCode.INVALID_REQUEST, "send exactly one file part")
                submit.upload = await spool_part(form, max_bytes)
                content_type = part.headers.get("Content-Type", "").partition(";")[0].strip()
                if _MEDIA_TYPE.match(content_type):  # stored as object metadata: plain ASCII type/subtype only
                    submit.content_type = content_type
                continue
            text = await read_form_field(form, part, name)
            if name in json_fields:
                submit.extra[name] = _parse_json(text, f"field {name!r}")
            elif text != "":
                submit.parameters[name] = text
    except BaseException:
        submit.discard()
        raise
    if submit.upload is None:
        raise PixqError(ErrorCode.INVALID_REQUEST, "multipart requests need a 'file' part")
    return submit


async def read_form_field(form: FormStream, part: BodyPartReader, name: str) -> str:
    """A text field, refused past FIELD_MAX_CHARS (4 bytes a character, UTF-8's most) before it
    is ever held whole; decoded like aiohttp does (Content-Transfer-Encoding, Content-Encoding)."""
    data = bytearray()

    def gather(chunk: memoryview) -> None:
        data.extend(chunk)
        if len(data) > 4 * FIELD_MAX_CHARS:
            raise PixqError(ErrorCode.INVALID_REQUEST, f"field {name!r} is too long")

    with _malformed_multipart():
        await form.stream_body(gather)
        text = bytes(part.decode(bytes(data))).decode("utf-8", "replace")
    if len(text) > FIELD_MAX_CHARS:
        raise PixqError(ErrorCode.INVALID_REQUEST, f"field {name!r} is too long")
    return text


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
    kind, value = json_input(body.get("input"))
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise PixqError(ErrorCode.INVALID_REQUEST, '"parameters" must be an object')
    extra = {key: value for key, value in body.items() if key not in ("input", "parameters")}
    return SubmitRequest(parameters=parameters, extra=extra, **{kind: value})


INPUT_KINDS = {"storage_key": "storage_key", "upload_id": "upload_id", "url": "source_url"}
"""A JSON submit's ``input`` names exactly one of these (value: the SubmitRequest field)."""


def json_input(source: Any) -> tuple[str, str]:
    """``(SubmitRequest field, value)`` of a JSON ``input`` object; INVALID_REQUEST otherwise."""
    named = [name for name in INPUT_KINDS if isinstance(source, dict) and name in source]
    if len(named) != 1 or len(source) != 1 or not isinstance(source[named[0]], str) or not source[named[0]]:
        raise PixqError(ErrorCode.INVALID_REQUEST,
                        'JSON requests need "input" with exactly one of "storage_key", "upload_id" or "url"')
    return INPUT_KINDS[named[0]], source[named[0]]


async def read_submit_request(request: web.Request, max_bytes: int, max_request_bytes: int,
                              json_fields: frozenset[str] = frozenset()) -> SubmitRequest:
    """Parse either request shape; anything else is 415. A multipart body is held to
    ``max_request_bytes`` (MAX_REQUEST_BYTES) as a whole, its file part to ``max_bytes``."""
    # Not request.content_type: aiohttp parses that with the email package (~0.8 ms a request).
    content_type = request.headers.get("Content-Type", "")
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        return await _read_multipart(request, max_bytes, set(json_fields), max_request_bytes)
    if media_type == "application/json":
        return await _read_json(request, content_type)
    raise PixqError(ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                    "send multipart/form-data with a 'file' part, or application/json with input.storage_key")


# --- Batches (POST /api/v1/jobs/batch) ------------------------------------------------


@dataclass
class UploadedPart:
    """One file part of a multipart batch: its temp file, or why it was refused. A refusal
    (too large, empty) concerns only the items naming this part, so it is kept, not raised."""

    path: Path | None
    content_type: str = "application/octet-stream"
    error: PixqError | None = None


@dataclass
class BatchRequest:
    """A batch's JSON object and, for a multipart batch, its file parts by part name."""

    document: dict[str, Any]
    files: dict[str, UploadedPart] | None = None
    """None for a JSON batch (items can then only name a storage_key)."""

    def discard(self) -> None:
        """Delete every temp file: called once every item was accepted or refused."""
        for part in (self.files or {}).values():
            if part.path is not None:
                part.path.unlink(missing_ok=True)


async def read_batch_request(request: web.Request, max_file_bytes: int, max_total_bytes: int,
                             max_files: int, document_part: str = "jobs") -> BatchRequest:
    """Parse a batch: ``application/json`` (the object itself), or ``multipart/form-data`` with
    a ``jobs`` part holding that object plus file parts that items name by part name.

    File parts are streamed to temp files exactly like a single upload (chunked, nothing held
    in memory), each held to ``max_file_bytes`` (MAX_INPUT_BYTES); an oversized or empty part
    is drained and recorded as that part's error, so the other items still go through. The
    whole body is held to ``max_total_bytes``: crossing it is a 413 for the request, since
    aiohttp's client_max_size does not apply to a streamed multipart body."""
    content_type = request.headers.get("Content-Type", "")
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type == "application/json":
        raw = await request.read()  # over client_max_size: aiohttp's 413, rendered as PAYLOAD_TOO_LARGE
        return BatchRequest(_json_object(_decode_text(raw, _charset(content_type)), "body"))
    if media_type != "multipart/form-data":
        raise PixqError(ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                        f"send application/json, or multipart/form-data with a {document_part!r} part")
    batch = BatchRequest(document={}, files={})
    budget = _Budget(max_total_bytes)
    document = None
    try:
        with _malformed_multipart():
            reader = await request.multipart()
        while True:
            with _malformed_multipart():
                part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise PixqError(ErrorCode.INVALID_REQUEST, "nested multipart bodies are not supported")
            if not part.name:
                raise PixqError(ErrorCode.INVALID_REQUEST, "every part needs a name")
            if part.name == document_part:
                if document is not None:
                    raise PixqError(ErrorCode.INVALID_REQUEST, f"send exactly one {document_part!r} part")
                document = await _read_document_part(part, budget)
                continue
            if part.name in batch.files:
                raise PixqError(ErrorCode.INVALID_REQUEST, f"two parts are named {part.name!r}")
            if len(batch.files) >= max_files:
                raise PixqError(ErrorCode.INVALID_PARAMETERS, f"at most {max_files} file parts per batch")
            batch.files[part.name] = await _stream_part(part, max_file_bytes, budget)
    except BaseException:
        batch.discard()
        raise
    if document is None:
        batch.discard()
        raise PixqError(ErrorCode.INVALID_REQUEST, f"multipart batches need a {document_part!r} part (JSON)")
    batch.document = document
    return batch


class _Budget:
    """Bytes left for the whole multipart body (MAX_REQUEST_BYTES)."""

    def __init__(self, limit: int, what: str = "batch body") -> None:
        self.limit = limit
        self.what = what
        self.used = 0

    def take(self, count: int) -> None:
        self.used += count
        if self.used > self.limit:
            raise PixqError(ErrorCode.PAYLOAD_TOO_LARGE,
                            f"{self.what} is larger than MAX_REQUEST_BYTES={self.limit} bytes")


def _decode_text(raw: bytes, charset: str) -> str:
    try:
        return raw.decode(charset)
    except UnicodeDecodeError:
        raise PixqError(ErrorCode.INVALID_REQUEST, f"body is not valid {charset[:40]!r}") from None
    except (LookupError, ValueError):
        raise PixqError(ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                        f"unsupported charset {charset[:40]!r}; send JSON as UTF-8") from None


def _json_object(text: str, what: str) -> dict[str, Any]:
    document = _parse_json(text, what)
    if not isinstance(document, dict):
        raise PixqError(ErrorCode.INVALID_REQUEST, f"{what} must be a JSON object")
    return document


async def _read_document_part(part: BodyPartReader, budget: _Budget, max_bytes: int = 1024 * 1024) -> dict:
    """The ``jobs`` part, read in chunks up to 1 MiB (the JSON form's own client_max_size)."""
    data = bytearray()
    with _malformed_multipart():
        while chunk := await part.read_chunk(CHUNK_BYTES):
            budget.take(len(chunk))
            data += chunk
            if len(data) > max_bytes:
                raise PixqError(ErrorCode.PAYLOAD_TOO_LARGE, f"the {part.name!r} part is larger than {max_bytes} bytes")
        decoded = part.decode(bytes(data))
    return _json_object(_decode_text(decoded, part.get_charset("utf-8")), f"part {part.name!r}")


async def _stream_part(part: BodyPartReader, max_bytes: int, budget: _Budget) -> UploadedPart:
    """One file part to a temp file; past ``max_bytes`` the rest is drained (and counted) so the
    next parts can be read, and the part carries PAYLOAD_TOO_LARGE instead of a file."""
    handle = tempfile.NamedTemporaryFile(prefix="pixq-upload-", delete=False)
    path: Path | None = Path(handle.name)
    written = 0
    try:
        with handle, _malformed_multipart():
            while chunk := await part.read_chunk(CHUNK_BYTES):
                budget.take(len(chunk))
                written += len(chunk)
                if path is not None and written > max_bytes:
                    path.unlink(missing_ok=True)
                    path = None
                if path is not None:
                    handle.write(chunk)
    except BaseException:
        if path is not None:
            path.unlink(missing_ok=True)
        raise
    if path is None:
        return UploadedPart(None, error=PixqError(ErrorCode.PAYLOAD_TOO_LARGE,
                                                  f"part {part.name!r} is larger than MAX_INPUT_BYTES={max_bytes}"))
    if written == 0:
        path.unlink(missing_ok=True)
        return UploadedPart(None, error=PixqError(ErrorCode.INVALID_REQUEST, f"part {part.name!r} is empty"))
    content_type = part.headers.get("Content-Type", "").partition(";")[0].strip()
    return UploadedPart(path, content_type if _MEDIA_TYPE.match(content_type) else "application/octet-stream")
