"""Where the event loop runs its database work: on the loop itself, or on the pool.

On PostgreSQL every query is a network round trip: the work makes one hop to the
database thread pool, and the loop goes on with other calls meanwhile.

On SQLite it runs on the event loop thread itself. A WAL reader answers in microseconds,
less than the hop to a pool thread and back; SQLite has one writer at a time anyway, and a
pool thread that writes gives up and retakes the GIL against the busy loop thread at every
statement, which made writes several times slower. Work on the loop never waits for the
write lock (`storage.db.run_without_waiting`): while another thread or process holds it, the
work runs on the pool instead, from its start.

Writes on the loop commit in groups. A commit writes each page a transaction changed to the
WAL, and works that run one after another mostly change the same pages (the newest leaf of
each index): a group of several creates writes a few pages each instead of twelve. The first
write opens the group's transaction; works that run while it is open (reads too, which see
its writes) join it, and none is answered before the group committed. It commits on the
next turn of the loop when calls come one at a time (a group that held a single work), and
after GROUP_WINDOW_S, or once it holds GROUP_MOST works, when calls overlap (a group that
held more), so a lone client waits for nobody. A group whose commit fails was undone whole:
its works run again on the pool.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from concurrent import futures
from typing import Any, TypeVar

from .batches import Gathering
from .storage import db

log = logging.getLogger(__name__)

# How long a write group waits for more works once calls overlap, and how many it holds.
# 2 ms rather than 3: the same calls/s, a p99 a fifth shorter under 64 writes in flight.
GROUP_WINDOW_S = 0.002
GROUP_MOST = 32

T = TypeVar("T")

# True in the context of a call whose work waited for its write group's commit: its answer
# already goes out together with the group's others (api/replies.py need not gather it).
answered_with_group: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "answered_with_group", default=False
)


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


class DatabaseWork(Gathering):
    """Runs database work for the event loop where this database wants it (module note);
    its write groups are batches (`batches.Gathering`)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, executor: futures.Executor, *, on_loop: bool
    ) -> None:
        super().__init__(lambda: GROUP_WINDOW_S, GROUP_MOST)
        self.executor = executor
        self._loop = loop
        self._on_loop = on_loop

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)`, run as one unit of work (storage.db.connected)."""
        if self._on_loop:
            outcome: _Outcome | None
            try:
                outcome = _Outcome(function, args)
            except db.WouldWait:
                outcome = None
            group = db.open_group()
            if group is not None:
                if not await self._committed(group):
                    outcome = None  # undone: what it wrote, or read of the group's writes
                else:
                    answered_with_group.set(True)
            if outcome is not None:
                return outcome.get()
        return await self._loop.run_in_executor(self.executor, function, *args)

    async def _committed(self, group: db.WriteGroup) -> bool:
        """Whether the group committed; the first work to ask opens its batch (module note)."""
        batch = group.waiter
        if batch is None:
            batch = group.waiter = self.open(lambda: self._commit(group))
        return await batch.join()

    def finish(self) -> None:
        """Commits the write group still open, if any: before the event loop stops, whose
        timer would otherwise never commit it (and the write lock would stay taken)."""
        group = db.open_group()
        if group is None:
            return
        if group.waiter is None:  # its work never came to wait for it
            db.commit_group(group)
            return
        group.waiter.end_now()

    def _commit(self, group: db.WriteGroup) -> bool:
        try:
            db.commit_group(group)
        except Exception as error:
            log.warning("a group of writes was undone (%s); its calls run again", error)
            return False
        return True


class _Outcome:
    """What work run on the loop returned or raised, given out once its group committed."""

    def __init__(self, function: Callable[..., Any], args: tuple) -> None:
        self._error: Exception | None = None
        try:
            self._value = db.run_without_waiting(function, *args, group=True)
        except db.WouldWait:
            raise
        except Exception as error:
            self._error = error

    def get(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value
