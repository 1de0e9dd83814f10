"""Server-sent events on the wire: headers, framing, heartbeats, and where a client resumes.

Framing (https://html.spec.whatwg.org/multipage/server-sent-events.html)::

    retry: 3000                      once, first: how long EventSource waits to reconnect

    id: 1234                         the event's PIXQ_EVENTS stream sequence
    event: job.completed             the envelope's type (or ``reset``, see api.handlers.events)
    data: {"type": ..., "data": ...} the full envelope, one line of JSON

    : heartbeat                      a comment after EVENTS_HEARTBEAT without any write

Headers: ``Cache-Control: no-cache`` (no cache may hold a stream), ``X-Accel-Buffering: no``
(nginx, and ingress-nginx, otherwise buffer the response and the client sees nothing
until the buffer fills). The heartbeat keeps idle connections from being cut by proxies
and load balancers (typically at 60 s) and lets the server notice a vanished client.
"""

import json
import time
from typing import Any

from aiohttp import web
from prometheus_client import Gauge

from api.middleware import REQUEST_ID
from pixq.errors import ErrorCode, PixqError

RETRY_MILLISECONDS = 3000
"""Sent as ``retry:``: EventSource reconnects after this long (to any replica)."""
MAX_ID_DIGITS = 19
"""A stream sequence is an unsigned 64-bit integer: at most 20 digits; 19 keeps it an int64."""

SSE_CONNECTIONS = Gauge("pixq_sse_connections", "SSE streams open on this API process", ["stream"])
"""By stream: ``job`` (GET /api/v1/jobs/{id}/events) or ``tenant`` (GET /api/v1/events)."""
for _stream in ("job", "tenant"):
    SSE_CONNECTIONS.labels(_stream)


def last_event_id(request: web.Request) -> int | None:
    """Where the client resumes: the ``Last-Event-ID`` header (EventSource sends it on every
    reconnect), else ``?last_event_id=`` (clients that cannot set headers: a stale query
    value must never win over the header EventSource keeps current). INVALID_PARAMETERS if
    it is not a stream sequence."""
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id") or ""
    raw = raw.strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > MAX_ID_DIGITS:
        raise PixqError(ErrorCode.INVALID_PARAMETERS, "Last-Event-ID must be an event id (a stream sequence)")
    return int(raw)


class EventStream:
    """One open text/event-stream response; tracks when it last wrote, for heartbeats."""

    def __init__(self, request: web.Request, heartbeat: float, stream: str) -> None:
        self.request = request
        self.heartbeat_seconds = heartbeat
        self.stream = stream
        self.response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            "X-Request-ID": request[REQUEST_ID],
        })
        self._last_write = time.monotonic()
        self._counted = False

    async def open(self) -> None:
        """Send the headers and ``retry:``; from here on errors can only end the stream."""
        await self.response.prepare(self.request)
        SSE_CONNECTIONS.labels(self.stream).inc()
        self._counted = True
        if self.request.method != "HEAD":  # aiohttp would send a HEAD's body bytes too
            await self._write(f"retry: {RETRY_MILLISECONDS}\n\n")

    async def send(self, event_type: str, data: dict[str, Any], event_id: int | None) -> None:
        await self.write_frame(encode(event_type, data, event_id))

    async def write_frame(self, frame: bytes) -> None:
        """Send an event already encoded (``encode``), e.g. one shared by many streams."""
        await self.response.write(frame)
        self._last_write = time.monotonic()

    def until_heartbeat(self) -> float:
        """Seconds until a heartbeat is due (0 when it is)."""
        return max(0.0, self._last_write + self.heartbeat_seconds - time.monotonic())

    async def heartbeat(self) -> None:
        await self._write(": heartbeat\n\n")

    async def close(self) -> None:
        if self._counted:
            SSE_CONNECTIONS.labels(self.stream).dec()
            self._counted = False
        try:
            await self.response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client has gone already

    async def _write(self, text: str) -> None:
        await self.write_frame(text.encode())


def encode(event_type: str, data: dict[str, Any], event_id: int | None) -> bytes:
    """One event frame: ``id:`` (when given), ``event:``, and the data as one line of JSON."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event_type}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
