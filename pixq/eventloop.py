"""Which asyncio event loop the API and the worker run on (EVENT_LOOP).

uvloop by default: its loop, sockets and timers are written in Cython over libuv, where the
standard loop's are Python. A job's plumbing is mostly loop work (the NATS client's reads,
redis-py's round trips, aiohttp's request handling), so the loop's own cost is a large part
of what issue 16 budgets per job. ``asyncio`` keeps the standard loop, as a fallback should a
uvloop release misbehave.
"""

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")
EventLoop = Literal["uvloop", "asyncio"]


def run(main: Coroutine[Any, Any, T], loop: EventLoop) -> T:
    """asyncio.run(main) on the chosen loop."""
    if loop == "uvloop":
        import uvloop  # only when chosen: EVENT_LOOP=asyncio runs without it
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)


def running() -> EventLoop:
    """Which loop this task runs on, for the start-up log line: what runs, not what was asked."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
