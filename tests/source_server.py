"""A loopback HTTP server that plays image sources for tests of pixq.sources.

Written on asyncio streams rather than aiohttp.web so a test controls exactly what goes on
the wire (a body with no Content-Length, a lying Content-Length, an answer that never
comes) and can see every TCP connection, even one that never sends a request: that is
what proves the SSRF guard refused before connecting.
"""

import asyncio
from dataclasses import dataclass, field

ENDLESS = -1
"""``Answer.size``: stream filler until the client hangs up."""


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    declare_length: bool = True
    """False: no Content-Length; the body ends when the connection closes."""
    size: int | None = None
    """Pad ``body`` with zero bytes to this many bytes (ENDLESS: until the client hangs up)."""
    declared: int | None = None
    """A Content-Length to announce instead of the real one (then the body never ends)."""
    stall: bool = False
    """Accept the request and never answer (until the server closes)."""


@dataclass
class Seen:
    path: str
    host: str


class SourceServer:
    """Serves ``routes[path]``: one Answer, or a list answered in turn (the last repeats)."""

    def __init__(self) -> None:
        self.routes: dict[str, Answer | list[Answer]] = {}
        self.connections = 0
        self.requests: list[Seen] = []
        self.finished_bodies = 0
        """Bodies sent to their end: a client that stops reading leaves this unchanged."""
        self.aborted_bodies = 0
        self._served: dict[str, int] = {}
        self._closing = asyncio.Event()
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    async def __aenter__(self) -> "SourceServer":
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing.set()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [seen.path for seen in self.requests]

    def _answer(self, path: str) -> Answer:
        path = path.split("?", 1)[0]
        route = self.routes.get(path, Answer(404, b"not found"))
        if isinstance(route, list):
            index = self._served.get(path, 0)
            self._served[path] = index + 1
            return route[min(index, len(route) - 1)]
        return route

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            host = next((line.split(":", 1)[1].strip() for line in lines[1:]
                         if line.lower().startswith("host:")), "")
            self.requests.append(Seen(path, host))
            await self._respond(self._answer(path), writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.aborted_bodies += 1
        finally:
            writer.close()

    async def _respond(self, answer: Answer, writer: asyncio.StreamWriter) -> None:
        if answer.stall:
            await self._closing.wait()
            return
        size = len(answer.body) if answer.size is None else answer.size
        headers = {"Connection": "close", **answer.headers}
        if answer.declared is not None:
            headers["Content-Length"] = str(answer.declared)
        elif answer.declare_length and size != ENDLESS:
            headers["Content-Length"] = str(size)
        head = f"HTTP/1.1 {answer.status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(head.encode() + b"\r\n" + answer.body)
        await writer.drain()
        sent = len(answer.body)
        filler = b"\0" * 65536
        while size == ENDLESS or sent < size:
            chunk = filler if size == ENDLESS else filler[:size - sent]
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
        if answer.declared is not None:
            await self._closing.wait()  # the rest of the announced length never comes
            return
        self.finished_bodies += 1
