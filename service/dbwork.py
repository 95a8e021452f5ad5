"""Where the event loop runs its database work: on the loop itself, or on the pool.

On PostgreSQL every query is a network round trip: the work makes one hop to the
database thread pool, and the loop goes on with other calls meanwhile.

On SQLite it runs on the event loop thread itself. A WAL reader answers in microseconds,
less than the hop to a pool thread and back; SQLite has one writer at a time anyway, and a
pool thread that writes gives up and retakes the GIL against the busy loop thread at every
statement, which made writes several times slower. Work on the loop never waits for the
write lock (`storage.db.run_without_waiting`): while another thread or process holds it, the
work runs on the pool instead, from its start.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent import futures
from typing import Any, TypeVar

from .storage import db

T = TypeVar("T")


class DatabaseExecutor(futures.Executor):
    """The database threads, as everything on the event loop uses them.

    Each piece of work runs with the submitter's contextvars (run_in_executor does not
    carry them), so the per-call record reaches the thread where the gate admits the
    caller; and as one unit of work (storage.db.connected), so its PostgreSQL connection
    goes back to the pool when it ends.
    """

    def __init__(self, inner: futures.Executor) -> None:
        self._inner = inner

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        context = contextvars.copy_context()
        return self._inner.submit(context.run, db.run_connected, fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._inner.shutdown(wait=wait, cancel_futures=cancel_futures)


class DatabaseWork:
    """Runs database work for the event loop where this database wants it (module note)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, executor: futures.Executor, *, on_loop: bool
    ) -> None:
        self.executor = executor
        self._loop = loop
        self._on_loop = on_loop

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)`, run as one unit of work (storage.db.connected)."""
        if self._on_loop:
            try:
                return db.run_without_waiting(function, *args)
            except db.WouldWait:
                pass
        return await self._loop.run_in_executor(self.executor, function, *args)
