"""A TCP proxy that can be cut: forwards to an upstream, or (``down()``) drops every open
connection and closes each new one as soon as it is accepted, or (``swallow_replies()``)
keeps connections open but silently drops everything the upstream sends back (a request
arrives, its answer never does: a lost ack). ``reset()`` closes every open connection and
forwards normally again. With ``tls``, it terminates TLS with that context in front of a
plain upstream (an HTTPS endpoint for moto's S3). Runs its own event loop in a thread, so
processes under test and synchronous callers can use it alike."""

import asyncio
import ssl
import threading

from tests.servers import free_port


class ToggleProxy:
    def __init__(self, upstream_host: str, upstream_port: int, tls: ssl.SSLContext | None = None) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.tls = tls
        self.port = free_port()
        self.accepted = 0
        """Connections accepted (with ``tls``, after the handshake: proof clients came through TLS)."""
        self.forwarding = True
        self.swallowing = False
        self.swallow_from: bytes | None = None
        """With ``swallow_replies(from_marker=...)``: start swallowing at the first reply chunk
        containing these bytes (that chunk included)."""
        self.swallowed = 0
        """Bytes from the upstream dropped while swallowing."""
        self.refused = 0
        """Connections closed on accept while down (proof that clients really tried)."""
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="toggle-proxy", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "ToggleProxy":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start")
        return self

    def stop(self) -> None:
        self._call(self._shutdown)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def down(self) -> None:
        """Refuse: close every open connection now and every new one on accept."""
        self._call(self._cut)

    def up(self) -> None:
        self._call(self._resume)

    def swallow_replies(self, from_marker: bytes | None = None) -> None:
        """Keep every connection open, forward client to upstream, drop upstream to client:
        from now on, or with ``from_marker`` from the first reply that contains it (e.g. the
        ack of a publish to one stream, ``b'"stream":"PIXQ_JOBS"'``, while earlier answers pass)."""
        self._call(lambda: self._swallow(from_marker))

    def reset(self) -> None:
        """Close every open connection (clients reconnect) and forward normally from now on."""
        self._call(self._reset)

    # --- loop side ----------------------------------------------------------------

    def _call(self, func) -> None:
        asyncio.run_coroutine_threadsafe(func(), self._loop).result(10)

    async def _cut(self) -> None:
        self.forwarding = False
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _resume(self) -> None:
        self.forwarding = True

    async def _swallow(self, from_marker: bytes | None) -> None:
        if from_marker is None:
            self.swallowing = True
        else:
            self.swallow_from = from_marker

    async def _reset(self) -> None:
        self.swallowing = False
        self.swallow_from = None
        await self._cut()
        self.forwarding = True

    async def _shutdown(self) -> None:
        self._server.close()
        await self._cut()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=self.tls))
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if not self.forwarding:
            self.refused += 1
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, reply: bool) -> None:
            try:
                while data := await src.read(65536):
                    if reply and self.swallow_from is not None and self.swallow_from in data:
                        self.swallowing, self.swallow_from = True, None
                    if reply and self.swallowing:
                        self.swallowed += len(data)
                        continue
                    dst.write(data)
                    await dst.drain()
            except OSError:  # ConnectionError and ssl.SSLError included
                pass
            finally:
                try:
                    dst.close()
                except (OSError, RuntimeError):  # a TLS transport already torn down
                    pass

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))
        self._writers.difference_update((writer, up_writer))
