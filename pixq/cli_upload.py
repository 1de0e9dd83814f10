"""`pixq upload FILE`: a direct upload, the way any client does one.

It asks the API for an upload (``POST /api/v1/uploads``, naming the file's image type), then
POSTs the returned ``fields`` plus the file to the returned ``url`` (S3 itself, or the API's
``/uploads/{token}`` with local storage), and prints ``{upload_id, url, expires_at, storage_key}``.
With ``--submit resize|crop|job`` it then submits a job naming the upload id, and with
``--wait``/``--output`` follows it, like ``pixq submit``.

The upload POST carries no API key: the signed form (or token) is its whole authorization,
and S3 would refuse a request carrying a foreign Authorization header.
"""

import asyncio
import json
import mimetypes
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from pixq.cli_client import CliError, Client

SUBMIT_PATHS = {"resize": "/api/v1/resize", "crop": "/api/v1/crop", "job": "/api/v1/jobs", "analyze": "/api/v1/analyze"}
"""What ``pixq submit KIND`` and ``pixq upload --submit KIND`` post to."""
_MAGIC = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"), (b"GIF8", "image/gif"),
          (b"II*\x00", "image/tiff"), (b"MM\x00*", "image/tiff"))
"""First bytes of the common formats, so a file without an extension still gets a type."""


def image_type(path: Path) -> str:
    """The file's image/* media type, from its first bytes, else its extension."""
    with path.open("rb") as handle:
        head = handle.read(32)
    for magic, media_type in _MAGIC:
        if head.startswith(magic):
            return media_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:12] in (b"ftypavif", b"ftypavis"):
        return "image/avif"
    guessed, _ = mimetypes.guess_type(path.name)
    if guessed and guessed.startswith("image/"):
        return guessed
    raise CliError(f"cannot tell the image type of {path}; pass --content-type image/...")


async def upload_file(client: Client, path: Path, content_type: str | None = None) -> dict[str, Any]:
    """Request an upload and POST the file to it; returns what to name it by."""
    if not path.is_file():
        raise CliError(f"no such file: {path}")
    content_type = content_type or image_type(path)
    grant = await client.call("POST", "/api/v1/uploads", json={"content_type": content_type})
    form = aiohttp.FormData()
    for name, value in grant["fields"].items():
        form.add_field(name, value)
    if not any(name.lower() == "content-type" for name in grant["fields"]):
        form.add_field("Content-Type", content_type)
    try:
        with path.open("rb") as source:
            form.add_field("file", source, filename=path.name, content_type=content_type)
            async with client.session.post(grant["url"], data=form) as response:
                text = await response.text(errors="replace")
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
        raise CliError(f"upload to {grant['url'].split('?')[0]} failed: {exc or type(exc).__name__}") from None
    if response.status >= 300:
        raise CliError(f"upload refused with HTTP {response.status}: {text[:300]}")
    return {"upload_id": grant["upload_id"], "storage_key": grant["fields"].get("key"),
            "expires_at": grant["expires_at"]}


async def upload_command(client: Client, args, parameters: dict[str, Any],
                         wait: Callable[[Client, str, float], Awaitable[dict]]) -> dict[str, Any]:
    """``pixq upload``: the upload, then (``--submit``) the job, then (``--wait``) its end."""
    uploaded = await upload_file(client, Path(args.file), args.content_type)
    if not args.submit:
        return uploaded
    body: dict[str, Any] = {"input": {"upload_id": uploaded["upload_id"]},
                            "parameters": json.loads(args.spec) if args.submit == "job" else parameters}
    if args.preset:  # a preset replaces the parameters (the API refuses both together)
        body = {"input": body["input"], "preset": args.preset}
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    accepted = await client.call("POST", SUBMIT_PATHS[args.submit], json=body, headers=headers)
    if not (args.wait or args.output):
        return {**uploaded, **accepted}
    status = await wait(client, accepted["job_id"], args.timeout)
    if args.output and status["status"] == "completed":
        await client.download(status["result"]["url"], Path(args.output))
    return {**uploaded, **status}
