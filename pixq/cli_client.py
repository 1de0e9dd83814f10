"""The CLI's HTTP client: JSON calls, downloads, and Server-Sent Event streams, over aiohttp.

The SSE reader is a few lines of the WHATWG event-stream grammar (``id``/``event``/``data``
fields, ``:`` comments, a blank line ends an event) rather than another dependency: the CLI
already speaks aiohttp, and what it needs beyond parsing (Last-Event-ID resumes, a fallback
to polling on servers without the routes) is policy no SSE library decides for it.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=45)
"""An event stream has no end time, but the server sends a heartbeat every 15 s: 45 s of
silence means the connection is gone, and the caller reconnects."""


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class EventsUnsupported(Exception):
    """The server refused the event stream (an older server, or the job is unknown): the caller
    falls back to polling, whose GET reports a real error (404, 401) properly."""


class StreamLost(Exception):
    """The connection dropped, timed out or ended before the caller saw what it waited for."""


@dataclass
class ServerEvent:
    id: str | None
    """The last ``id:`` seen on the stream (it persists across events, as in EventSource)."""
    event: str
    data: str

    def json(self) -> Any:
        try:
            return json.loads(self.data)
        except ValueError:
            raise CliError(f"the server sent an event that is not JSON: {self.data[:200]!r}") from None


async def read_events(content: aiohttp.StreamReader) -> AsyncIterator[ServerEvent]:
    """Parse an event stream (LF or CRLF line ends); comments (heartbeats) are skipped."""
    last_id: str | None = None
    event_type, data = "", []
    async for raw in content:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                yield ServerEvent(last_id, event_type or "message", "\n".join(data))
            event_type, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "event":
            event_type = value
        elif name == "id" and "\0" not in value:
            last_id = value or None


class Client:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, api_key: str) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def call(self, method: str, path: str, **kwargs) -> Any:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        try:
            async with self.session.request(method, self.base_url + path, headers=headers, **kwargs) as response:
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, OSError, json.JSONDecodeError, asyncio.TimeoutError) as exc:
            raise CliError(f"cannot reach the pixq API at {self.base_url}: {exc or type(exc).__name__}") from None
        if response.status >= 400:
            raise CliError(_error_text(response.status, body))
        return body

    async def events(self, path: str, last_event_id: str | None = None,
                     on_open: Callable[[], None] | None = None, **params: str) -> AsyncIterator[ServerEvent]:
        """The events of an SSE route, resuming after ``last_event_id``. Raises EventsUnsupported
        when the server answers 4xx/501 or not an event stream, StreamLost when the connection
        fails or ends (the caller decides whether that was expected)."""
        headers = {**self.headers, "Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        try:
            async with self.session.get(self.base_url + path, headers=headers, params=params,
                                        timeout=STREAM_TIMEOUT) as response:
                media_type = response.headers.get("Content-Type", "").partition(";")[0].strip()
                if (400 <= response.status < 500 or response.status == 501
                        or (response.status < 300 and media_type != "text/event-stream")):
                    raise EventsUnsupported(f"HTTP {response.status} {media_type}")
                if response.status >= 300:
                    raise StreamLost(f"HTTP {response.status}")
                if on_open:
                    on_open()
                async for event in read_events(response.content):
                    yield event
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError) as exc:
            raise StreamLost(str(exc) or type(exc).__name__) from None
        raise StreamLost("the server closed the stream")

    async def download(self, url: str, target: Path) -> None:
        if url.startswith("/"):
            url = self.base_url + url
        try:
            async with self.session.get(url) as response:
                if response.status != 200:
                    raise CliError(f"download failed with HTTP {response.status}")
                data = await response.read()
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            raise CliError(f"download failed: {exc or type(exc).__name__}") from None
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _error_text(status: int, body: Any) -> str:
    error = body.get("error", {}) if isinstance(body, dict) else {}
    return f"{status} {error.get('code', '')}: {error.get('message', body)}"
