"""One tail of PIXQ_EVENTS per API process, shared by every SSE stream, long-poll and /img wait in it.

A thousand open streams must not mean a thousand JetStream consumers, so each API process
reads the live end of the stream once (an ordered push consumer on ``pixq.events.>``) and
hands each event to the in-memory listeners that asked for it: every event (an admin), one
tenant's, or one job's. Nothing here is shared between replicas: a client may reconnect to
any of them, because what it missed is read back from JetStream by stream sequence
(api.sse), never from this process.

The consumer runs only while someone listens. Every job stores 3+ events; reading and
decoding them with no listener is API and NATS CPU spent on every job for nothing. So the
first listener to register starts the consumer (from the stream's end at that moment), and
when the last one has left and EVENTS_HUB_LINGER seconds pass with no new one, the hub
unsubscribes and deletes it. The linger keeps reconnecting clients and back-to-back
long-polls from paying a start (two JetStream requests) each.

Guarantees a reader builds on:

- **Coverage**: registration (``async with hub.listen(key)``) returns once the consumer runs,
  and the hub delivers every event with a stream sequence >= ``start_sequence`` (the
  stream's end when the consumer started), in sequence order. So a listener, once registered,
  receives every event stored after that moment; what was stored before, it reads from
  JetStream (``replay``) up to the stream's last sequence read *after* registering, and the
  two overlap rather than leave a gap (the reader skips sequences it has already sent).
  Listeners registering at once share one start (one consumer); one registering while the
  hub is stopping (linger expired, unsubscribe under way) waits for that stop and gets a new
  consumer, never the dying one.
- **Bounded memory**: each listener holds at most ``LISTENER_QUEUE_MAX`` events. One that
  falls further behind is ended (``lagged``); its client reconnects with Last-Event-ID and
  catches up from JetStream. The hub never waits for a slow listener.
- **No silent gap**: the consumer reads the whole stream, whose sequences have no holes
  (limits retention only removes the oldest), so a jump in sequence means the hub missed
  events (a slow-consumer drop in the client library); every listener is then ended as
  lagged, and their clients resume from JetStream. (Between two consumers nobody listened,
  so the jump from one's last sequence to the next one's start is no gap.)
- **NATS reconnects**: nats-py recreates an ordered consumer from the last sequence it
  received when its idle heartbeats stop (a restarted server forgot the consumer).
  Before the first message that sequence is 0 — it would replay the whole 72 h stream —
  so the hub seeds it with its start sequence, and drops anything at or below the last
  sequence it delivered in any case.
- **Shutdown** (``stop``) ends every listener (``shutdown``) and the consumer for good; a
  listener registering afterwards is ended at once.
"""
import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from pixq import names
from pixq.errors import ErrorCode, PixqError, describe

log = structlog.get_logger("pixq.api.events")

LISTENER_QUEUE_MAX = 1000
"""Events one listener may hold unsent; beyond that it is ended and its client resumes from JetStream."""
LINGER_SECONDS = 30.0
"""EVENTS_HUB_LINGER's default: how long the consumer outlives its last listener."""
IDLE_HEARTBEAT_SECONDS = 1.0
"""The hub's consumer heartbeat: two missed ones (a restarted server) make nats-py recreate it."""
REPLAY_BATCH = 256
REPLAY_FETCH_SECONDS = 2.0
JS_TIMEOUT_SECONDS = 5.0

ALL = ("all", "")


@dataclass(slots=True)
class HubEvent:
    """One stored event: its stream sequence, where it belongs, and its envelope (pixq.events).
    Shared by every listener it reaches: readers never modify it."""

    sequence: int
    tenant: str
    kind: str
    """``job`` or ``batch``, from the subject."""
    target: str
    """The job or batch id, from the subject."""
    envelope: dict[str, Any]
    frames: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)
    """The SSE frame by origin the URLs were minted for: encoded (and its URLs minted) once for
    every stream of that origin, not once per stream."""

    @property
    def position(self) -> tuple[int, ...]:
        return tuple(self.envelope.get("position") or (0, 0, 0))


def parse_event(subject: str, sequence: int, data: bytes) -> HubEvent | None:
    """``pixq.events.<tenant>.<job|batch>.<id>.<what>`` (or the 5-token form of events stored
    by a previous release: names.parse_event_subject) and its JSON envelope; None for anything else."""
    where = names.parse_event_subject(subject)
    if where is None:
        return None
    try:
        envelope = json.loads(data)
    except ValueError:
        return None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("type"), str):
        return None
    tenant, kind, target = where
    return HubEvent(sequence=sequence, tenant=tenant, kind=kind, target=target, envelope=envelope)


class StreamEnded(Exception):
    """A listener was ended: ``lagged`` (resume from JetStream) or ``shutdown`` (the process stops)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Listener:
    """The events one stream or long-poll asked for, in sequence order, at most ``maxlen`` unsent."""

    def __init__(self, key: tuple[str, str], maxlen: int) -> None:
        self.key = key
        self._items: deque[HubEvent] = deque()
        self._maxlen = maxlen
        self._ready = asyncio.Event()
        self.ended: str | None = None

    def offer(self, event: HubEvent) -> None:
        if self.ended:
            return
        if len(self._items) >= self._maxlen:
            self.end("lagged")
            return
        self._items.append(event)
        self._ready.set()

    def end(self, reason: str) -> None:
        """Stop this listener; what it held is dropped (a reader resumes from JetStream)."""
        if self.ended is None:
            self.ended = reason
            self._items.clear()
        self._ready.set()

    async def next(self, timeout: float | None) -> HubEvent | None:
        """The next event; None when ``timeout`` passes first; StreamEnded once ended."""
        try:
            async with asyncio.timeout(timeout):
                while not self._items:
                    if self.ended:
                        raise StreamEnded(self.ended)
                    self._ready.clear()
                    await self._ready.wait()
        except TimeoutError:
            return None
        if self.ended:
            raise StreamEnded(self.ended)
        return self._items.popleft()


class Registration:
    """One listener's registration, from ``EventHub.listen``.

    ``async with hub.listen(key) as listener``: when the block starts, the listener is
    registered *and* the hub's consumer is running (started for it if need be), so every event
    stored from then on reaches it. Raises PixqError(QUEUE_UNAVAILABLE) when NATS does not
    answer the start."""

    __slots__ = ("_hub", "_key", "_listener")

    def __init__(self, hub: "EventHub", key: tuple[str, str]) -> None:
        self._hub = hub
        self._key = key
        self._listener: Listener | None = None

    async def __aenter__(self) -> Listener:
        listener = self._hub._register(self._key)
        try:
            await self._hub._running()
        except BaseException:
            self._hub._unregister(listener)
            raise
        self._listener = listener
        return listener

    async def __aexit__(self, *exc_info: object) -> None:
        self._leave()

    def _leave(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            self._hub._unregister(listener)


class EventHub:
    """The process's one reader of the live end of PIXQ_EVENTS, while anyone listens (see the
    module docstring)."""

    def __init__(self, js: JetStreamContext, listener_max: int = LISTENER_QUEUE_MAX,
                 linger: float = LINGER_SECONDS) -> None:
        self.js = js
        self.listener_max = listener_max
        self.linger = linger
        """Seconds the consumer outlives the last listener: a client that reconnects, or the
        next long-poll, finds it running instead of paying a start."""
        self.start_sequence = 0
        """The first sequence of the current (or last) consumer: the stream's end when it started."""
        self.last_sequence = 0
        """The last sequence handed to listeners."""
        self.gaps = 0
        """Jumps in sequence (missed events): every listener was ended each time."""
        self.stale = 0
        """Events received again after a consumer reset, and dropped."""
        self.starts = 0
        """Consumers created so far (one per busy period, however many listeners it had)."""
        self._listeners: dict[tuple[str, str], set[Listener]] = {}
        self._run: asyncio.Task | None = None
        """The start of the current consumer: pending while it starts, done while it runs,
        None while none runs or one is being stopped."""
        self._halt: asyncio.Task | None = None
        """The last stop (unsubscribe and delete), which a new start waits for."""
        self._linger: asyncio.TimerHandle | None = None
        self._generation = 0
        """Bumped when a consumer is stopped: messages its subscription still delivers are dropped."""
        self._stopped = False

    @property
    def listeners(self) -> int:
        return sum(len(group) for group in self._listeners.values())

    @property
    def running(self) -> bool:
        """A consumer is tailing the stream now."""
        run = self._run
        return run is not None and run.done() and not run.cancelled() and run.exception() is None

    def listen(self, key: tuple[str, str]) -> Registration:
        """A listener for ``key`` (``ALL``, ``("tenant", name)`` or ``("job", id)``) for the
        duration of an ``async with`` block (see Registration)."""
        return Registration(self, key)

    async def start(self) -> None:
        """Start the consumer now rather than at the first registration (which does it itself);
        with no listener it stops after the linger. PixqError(QUEUE_UNAVAILABLE) if NATS does
        not answer."""
        await self._running()
        if not self._listeners:
            self._schedule_linger()

    async def stop(self) -> None:
        """End every listener (streams close, long-polls answer) and stop reading for good; safe
        to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self._cancel_linger()
        for listeners in list(self._listeners.values()):
            for listener in list(listeners):
                listener.end("shutdown")
        self._generation += 1
        run, self._run = self._run, None
        if run is not None:
            await self._unsubscribe(run)
        if self._halt is not None:
            await asyncio.wait({self._halt})

    # --- Registration and the consumer's lifecycle ----------------------------------------

    def _register(self, key: tuple[str, str]) -> Listener:
        listener = Listener(key, self.listener_max)
        if self._stopped:
            listener.end("shutdown")
        self._listeners.setdefault(key, set()).add(listener)
        self._cancel_linger()
        return listener

    def _unregister(self, listener: Listener) -> None:
        group = self._listeners.get(listener.key)
        if group is not None:
            group.discard(listener)
            if not group:
                del self._listeners[listener.key]
        if not self._listeners and self._run is not None and not self._stopped:
            self._schedule_linger()

    def _ensure_running(self) -> asyncio.Task | None:
        """The start of the consumer, begun now unless one runs or is starting (so listeners
        registering at once share one); None after shutdown."""
        if self._stopped:
            return None
        self._cancel_linger()
        if self._run is None:
            run = asyncio.get_running_loop().create_task(self._subscribe(self._halt))
            run.add_done_callback(self._started)
            self._run = run
        return self._run

    async def _running(self) -> None:
        run = self._ensure_running()
        if run is not None:
            # Shielded: a request that gives up while waiting does not cancel the others' start.
            await asyncio.shield(run)

    async def _subscribe(self, halt: asyncio.Task | None) -> Any:
        """Tail the stream from its current end. A consumer being stopped is gone first: a
        listener registering while the hub stops gets a new one, not the dying one."""
        if halt is not None:
            await asyncio.wait({halt})
        _, last = await self.bounds()
        self._generation += 1
        generation = self._generation
        self.start_sequence = last + 1
        self.last_sequence = last

        async def deliver(msg: Msg) -> None:
            if self._generation == generation:
                await self._on_message(msg)

        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.start_sequence,
                                ack_policy=AckPolicy.NONE, filter_subject=names.EVENTS_SUBJECTS[0])
        try:
            subscription = await self.js.subscribe(
                names.EVENTS_SUBJECTS[0], stream=names.EVENTS_STREAM, cb=deliver, config=config,
                ordered_consumer=True, idle_heartbeat=IDLE_HEARTBEAT_SECONDS)
        except (NatsError, OSError, asyncio.TimeoutError) as exc:
            raise PixqError(ErrorCode.QUEUE_UNAVAILABLE, f"cannot tail {names.EVENTS_STREAM}: {describe(exc)}") from None
        # nats-py restarts an ordered consumer from the last sequence it received + 1; before
        # any message that is 1, the start of the whole stream. Seed it with where we started.
        state = getattr(getattr(subscription, "_sub", None), "_jsi", None)
        if state is not None and getattr(state, "_sseq", None) == 0:
            state._sseq = last
        self.starts += 1
        log.info("events_hub_started", start_sequence=self.start_sequence)
        return subscription

    def _started(self, run: asyncio.Task) -> None:
        if run.cancelled() or run.exception() is not None:
            if self._run is run:
                self._run = None  # the next registration tries again
            if not run.cancelled():
                log.warning("events_hub_start_failed", error=describe(run.exception()))
        elif self._run is run and not self._listeners:
            self._schedule_linger()  # every listener left while it started

    def _schedule_linger(self) -> None:
        self._cancel_linger()
        if self.linger <= 0:
            self._linger_expired()
        else:
            self._linger = asyncio.get_running_loop().call_later(self.linger, self._linger_expired)

    def _cancel_linger(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None

    def _linger_expired(self) -> None:
        self._linger = None
        if self._listeners or self._stopped or self._run is None:
            return
        self._generation += 1
        run, self._run = self._run, None
        self._halt = asyncio.get_running_loop().create_task(self._unsubscribe(run))

    async def _unsubscribe(self, run: asyncio.Task) -> None:
        """Stop the consumer ``run`` started (once it has): unsubscribe, and delete it on the
        server at once rather than when the server notices nobody reads it."""
        await asyncio.wait({run})
        if run.cancelled() or run.exception() is not None:
            return
        subscription = run.result()
        with contextlib.suppress(NatsError, OSError, asyncio.TimeoutError):
            await subscription.unsubscribe()
        consumer = getattr(subscription, "_consumer", None)  # nats-py renames it on each reset
        if consumer:
            with contextlib.suppress(NatsError, OSError, asyncio.TimeoutError):
                await self.js.delete_consumer(names.EVENTS_STREAM, consumer)
        log.info("events_hub_stopped", last_sequence=self.last_sequence)

    async def _on_message(self, msg: Msg) -> None:
        try:
            sequence = msg.metadata.sequence.stream
        except (ValueError, IndexError, AttributeError):
            return
        if sequence <= self.last_sequence:
            self.stale += 1
            return  # redelivered after a consumer reset: already handed out
        if sequence != self.last_sequence + 1:
            self.gaps += 1
            log.warning("events_hub_gap", expected=self.last_sequence + 1, received=sequence,
                        listeners=self.listeners)
            for listeners in list(self._listeners.values()):
                for listener in list(listeners):
                    listener.end("lagged")
        self.last_sequence = sequence
        event = parse_event(msg.subject, sequence, msg.data)
        if event is None:
            return
        keys = [ALL, ("tenant", event.tenant)]
        if event.kind == "job":
            keys.append(("job", event.target))
        for key in keys:
            for listener in list(self._listeners.get(key, ())):
                listener.offer(event)

    async def bounds(self) -> tuple[int, int]:
        """The stream's (first, last) sequence now; PixqError(QUEUE_UNAVAILABLE) if NATS does not answer."""
        try:
            info = await self.js.stream_info(names.EVENTS_STREAM)
        except (NatsError, OSError, asyncio.TimeoutError) as exc:
            raise PixqError(ErrorCode.QUEUE_UNAVAILABLE, f"cannot read {names.EVENTS_STREAM}: {describe(exc)}") from None
        return int(info.state.first_seq or 0), int(info.state.last_seq or 0)

    async def last_event(self, subject: str) -> HubEvent | None:
        """The latest stored event on one subject (a job's), or None when it has none left."""
        try:
            raw = await self.js.get_last_msg(names.EVENTS_STREAM, subject)
        except NotFoundError:
            return None
        except (NatsError, OSError, asyncio.TimeoutError) as exc:
            raise PixqError(ErrorCode.QUEUE_UNAVAILABLE, f"cannot read {names.EVENTS_STREAM}: {describe(exc)}") from None
        return parse_event(raw.subject, raw.seq, raw.data or b"")

    async def replay(self, subject_filter: str, start: int, until: int) -> AsyncIterator[HubEvent]:
        """Stored events matching ``subject_filter`` with sequences from ``start`` to at least
        ``until``, oldest first, through a temporary consumer. Use with contextlib.aclosing.

        Only for catching up (a reconnect with Last-Event-ID), never for the live tail: a
        reader registers its listener first and passes the stream's last sequence read after
        that as ``until``, so everything later reaches it through the hub."""
        config = ConsumerConfig(filter_subject=subject_filter, deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                opt_start_seq=max(1, start), ack_policy=AckPolicy.NONE, inactive_threshold=60.0,
                                mem_storage=True, num_replicas=1)
        try:
            info = await self.js.add_consumer(names.EVENTS_STREAM, config, timeout=JS_TIMEOUT_SECONDS)
        except (NatsError, OSError, asyncio.TimeoutError) as exc:
            raise PixqError(ErrorCode.QUEUE_UNAVAILABLE, f"cannot read {names.EVENTS_STREAM}: {describe(exc)}") from None
        pending, sequence = info.num_pending or 0, start - 1
        subscription = None
        try:
            if pending:
                subscription = await self.js.pull_subscribe_bind(info.name, names.EVENTS_STREAM)
            while pending and sequence < until:
                try:
                    messages = await subscription.fetch(min(REPLAY_BATCH, pending), timeout=REPLAY_FETCH_SECONDS)
                except (NatsError, asyncio.TimeoutError) as exc:
                    # Never end a catch-up early in silence: the reader would skip events.
                    raise PixqError(ErrorCode.QUEUE_UNAVAILABLE,
                                    f"cannot replay {names.EVENTS_STREAM}: {describe(exc)}") from None
                for msg in messages:
                    pending, sequence = msg.metadata.num_pending, msg.metadata.sequence.stream
                    event = parse_event(msg.subject, sequence, msg.data)
                    if event is not None:
                        yield event
        finally:
            if subscription is not None:
                with contextlib.suppress(NatsError, OSError, asyncio.TimeoutError):
                    await subscription.unsubscribe()
            with contextlib.suppress(NatsError, OSError, asyncio.TimeoutError):
                await self.js.delete_consumer(names.EVENTS_STREAM, info.name)


EVENTS_HUB = web.AppKey("events_hub", EventHub)


def hub_of(request: web.Request) -> EventHub:
    return request.app[EVENTS_HUB]


async def end_streams(app: web.Application) -> None:
    """End every SSE stream and answer every long-poll now (on SIGTERM, before draining requests):
    clients reconnect to another replica with Last-Event-ID."""
    hub = app.get(EVENTS_HUB)
    if hub is not None:
        await hub.stop()
