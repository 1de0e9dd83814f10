"""HTTP for the client: one request with its retries, errors as exceptions, downloads, SSE connections.

Everything that touches aiohttp is here, so the API surface (pixq.client.aio) reads as a list
of routes. A request body is rebuilt for every attempt (``body`` is a factory): a multipart
form holding an open file cannot be sent twice. Headers, the Idempotency-Key among them, are
built once per logical call by the caller and sent unchanged on every attempt: that is what
makes a retried submit the same submit.
"""

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from pixq import __version__
from pixq.client.errors import ApiError, ConnectionFailed, EventsUnsupported, error_code
from pixq.client.retry import RetryPolicy
from pixq.units import retry_after_seconds as parse_retry_after
from pixq.client.sse import Dropped, ServerEvent, read_events

USER_AGENT = f"pixq-client/{__version__}"
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=45)
"""An event stream has no end time, but the server sends a heartbeat every 15 s (EVENTS_HEARTBEAT):
45 s of silence means the connection is gone, and the stream is resumed."""
NETWORK_ERRORS = (aiohttp.ClientError, OSError, asyncio.TimeoutError)

Body = Callable[[contextlib.ExitStack], Any]
"""Builds one attempt's request body (FormData, bytes); files it opens go on the ExitStack."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: Any
    """Parsed JSON; None for 304 and empty bodies."""


class Transport:
    def __init__(self, base_url: str, api_key: str | None, retry: RetryPolicy, timeout: float,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.retry = retry
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(10.0, timeout))
        self._session = session
        self._owns_session = session is None

    def session(self) -> aiohttp.ClientSession:
        """Created on first use, inside the running event loop (aiohttp binds it to that loop)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        return self._session

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    def url(self, path_or_url: str) -> str:
        return self.base_url + path_or_url if path_or_url.startswith("/") else path_or_url

    async def request(self, method: str, path: str, *, idempotent: bool, params: Mapping[str, str] | None = None,
                      json_body: Any = None, body: Body | None = None, headers: Mapping[str, str] | None = None,
                      ok: frozenset[int] = frozenset(), timeout: float | None = None,
                      authorized: bool = True) -> Answer:
        """One logical call: retried per the policy; a 2xx (or a status in ``ok``) is the
        Answer, anything else ApiError, no answer at all ConnectionFailed."""
        sent = {**(self.auth if authorized else {}), **(headers or {})}
        started, attempt = time.monotonic(), 0
        request_timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=10) if timeout else self.timeout
        while True:
            attempt += 1
            try:
                with contextlib.ExitStack() as files:
                    data = body(files) if body is not None else None
                    async with self.session().request(method, self.url(path), params=params, json=json_body,
                                                      data=data, headers=sent, timeout=request_timeout) as response:
                        raw = await response.read()
                        answer = Answer(response.status, response.headers, _parse(raw))
            except NETWORK_ERRORS as exc:
                where = f"the pixq API at {self.base_url}" if path.startswith("/") else path.split("?")[0]
                failure: Exception = ConnectionFailed(f"cannot reach {where}: {exc or type(exc).__name__}")
                status, retry_after = None, None
            else:
                if answer.status < 300 or answer.status in ok:
                    return answer
                failure = _api_error(answer)
                status, retry_after = answer.status, failure.retry_after
            if attempt >= self.retry.attempts or not self.retry.should_retry(status, idempotent):
                raise failure
            wait = self.retry.delay(attempt, retry_after)
            if time.monotonic() - started + wait > self.retry.max_elapsed:
                raise failure
            await asyncio.sleep(wait)

    async def events(self, path: str, params: Mapping[str, str], last_event_id: str | None,
                     on_open: Callable[[], None] | None = None) -> AsyncIterator[ServerEvent]:
        """One connection to an SSE route (pixq.client.sse.resuming reconnects). EventsUnsupported
        for a 4xx other than 429, or 501, or a 2xx that is not an event stream; Dropped otherwise."""
        headers = {**self.auth, "Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        try:
            async with self.session().get(self.url(path), headers=headers, params=params,
                                          timeout=STREAM_TIMEOUT) as response:
                media_type = response.headers.get("Content-Type", "").partition(";")[0].strip()
                if (400 <= response.status < 500 and response.status != 429) or response.status == 501:
                    error = _api_error(Answer(response.status, response.headers, _parse(await response.read())))
                    raise EventsUnsupported(error.status, error.code, error.message, error.request_id)
                if response.status >= 300:
                    raise Dropped(f"HTTP {response.status}", parse_retry_after(response.headers.get("Retry-After")))
                if media_type != "text/event-stream":
                    raise EventsUnsupported(response.status, "NOT_AN_EVENT_STREAM",
                                            f"answered {media_type or 'no Content-Type'}, not text/event-stream")
                if on_open:
                    on_open()
                async for event in read_events(response.content):
                    yield event
        except NETWORK_ERRORS as exc:
            raise Dropped(str(exc) or type(exc).__name__) from None
        except ValueError as exc:  # a line longer than aiohttp's buffer
            raise Dropped(str(exc) or type(exc).__name__) from None

    async def fetch(self, url: str, sink: Callable[[bytes], None]) -> None:
        """GET a download URL (relative: the API's own) with retries, feeding ``sink`` the bytes.
        Never sends the API key: the URL is signed, and S3 refuses a foreign Authorization."""
        started, attempt = time.monotonic(), 0
        while True:
            attempt += 1
            status, retry_after = None, None
            try:
                async with self.session().get(self.url(url), timeout=self.timeout) as response:
                    if response.status == 200:
                        chunks = [chunk async for chunk in response.content.iter_chunked(256 * 1024)]
                        for chunk in chunks:  # only once complete: a retry never appends twice
                            sink(chunk)
                        return
                    status = response.status
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    failure: Exception = _api_error(Answer(status, response.headers, _parse(await response.read())))
            except NETWORK_ERRORS as exc:
                failure = ConnectionFailed(f"download failed: {exc or type(exc).__name__}")
            if attempt >= self.retry.attempts or not self.retry.should_retry(status, idempotent=True):
                raise failure
            wait = self.retry.delay(attempt, retry_after)
            if time.monotonic() - started + wait > self.retry.max_elapsed:
                raise failure
            await asyncio.sleep(wait)


def _parse(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _api_error(answer: Answer) -> ApiError:
    """The error envelope ``{"error": {"code", "message"}}``, or what stands in for it (S3's
    XML, a proxy's HTML page) with the status as the only fact."""
    error = answer.body.get("error") if isinstance(answer.body, dict) else None
    if isinstance(error, dict) and "code" in error:
        code, message = error_code(error["code"]), str(error.get("message", ""))
    else:
        code, message = f"HTTP_{answer.status}", str(answer.body or "")[:300]
    return ApiError(answer.status, code, message, answer.headers.get("X-Request-ID"),
                    parse_retry_after(answer.headers.get("Retry-After")))
