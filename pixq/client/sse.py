"""Server-Sent Events: the event-stream grammar, and resuming a stream across dropped connections.

The parser is the few lines of the WHATWG grammar pixq's streams use (``id``/``event``/``data``
fields, ``:`` comments, a blank line ends an event, LF or CRLF) rather than a dependency: what a
client needs beyond parsing (Last-Event-ID resumes with a bounded reconnect budget, skipping the
event a resume sends again) is policy no SSE library decides for it.

``resuming`` reconnects after a drop with the last id seen, so no event is lost or repeated; it
gives up with StreamLost after ``StreamPolicy.reconnects`` failures in a row *without a new
event in between* (progress restores the budget).
"""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from pixq.client.errors import PixqClientError, StreamLost
from pixq.schemas import EventEnvelope


@dataclass(frozen=True)
class ServerEvent:
    id: str | None
    """The last ``id:`` seen on the stream (it persists across events, as in EventSource)."""
    event: str
    data: str

    def json(self) -> Any:
        """The ``data`` as JSON (pixq's events carry their envelope there)."""
        try:
            return json.loads(self.data)
        except ValueError:
            raise PixqClientError(f"the server sent an event that is not JSON: {self.data[:200]!r}") from None

    def envelope(self) -> EventEnvelope:
        """A job or batch event's envelope (pixq.events), parsed; not for ``reset`` events."""
        return EventEnvelope.model_validate(self.json())


async def read_events(lines: AsyncIterator[bytes]) -> AsyncIterator[ServerEvent]:
    """Parse an event stream (LF or CRLF line ends); comments (heartbeats) are skipped."""
    last_id: str | None = None
    event_type, data = "", []
    async for raw in lines:
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


class Dropped(Exception):
    """One connection of a stream failed or ended (internal: ``resuming`` reconnects)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass(frozen=True)
class StreamPolicy:
    reconnects: int = 5
    """Reconnects in a row, without a new event in between, before StreamLost."""
    base_delay: float = 0.2
    max_delay: float = 5.0

    def delay(self, failures: int) -> float:
        return min(self.max_delay, self.base_delay * 2 ** failures)


DEFAULT_STREAM_POLICY = StreamPolicy()

Connect = Callable[[str | None], AsyncIterator[ServerEvent]]
"""Opens one connection resuming after the given id; yields its events, raises Dropped when it ends."""


async def resuming(connect: Connect, what: str, last_event_id: str | None = None,
                   policy: StreamPolicy = DEFAULT_STREAM_POLICY) -> AsyncIterator[ServerEvent]:
    """The events of a stream across reconnects (see the module docstring). Ends only by the
    caller stopping, an error (EventsUnsupported from ``connect``), or StreamLost."""
    last_id, failures = last_event_id, 0
    while True:
        retry_after = None
        try:
            async with contextlib.aclosing(connect(last_id)) as events:
                async for event in events:
                    if event.id is not None and event.id == last_id:
                        continue  # already seen: a resume never repeats an event
                    if event.id is not None:
                        last_id, failures = event.id, 0  # progress: the reconnect budget starts over
                    yield event
            lost = "the server closed the stream"
        except Dropped as exc:
            lost, retry_after = str(exc), exc.retry_after
        failures += 1
        if failures > policy.reconnects:
            raise StreamLost(f"lost the event stream {what} ({lost}) {failures} times in a row")
        await asyncio.sleep(max(policy.delay(failures), retry_after or 0.0))
