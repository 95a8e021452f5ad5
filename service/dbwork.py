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


class DatabaseWork:
    """Runs database work for the event loop where this database wants it (module note)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, executor: futures.Executor, *, on_loop: bool
    ) -> None:
        self.executor = executor
        self._loop = loop
        self._on_loop = on_loop
        self.calls_overlap = False  # whether the last write group held more than one work

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
        """Whether the group committed; the first work to ask has it committed (module note)."""
        pending = group.waiter
        if pending is None:
            delay = GROUP_WINDOW_S if self.calls_overlap else 0.0
            timer = self._loop.call_later(delay, self._commit, group)
            pending = group.waiter = _Pending(self._loop.create_future(), timer)
        pending.works += 1
        if pending.works == GROUP_MOST:
            pending.timer.cancel()
            pending.timer = self._loop.call_soon(self._commit, group)
        # Shielded: a cancelled call must not cancel the others' wait.
        return await asyncio.shield(pending.committed)

    def finish(self) -> None:
        """Commits the write group still open, if any: before the event loop stops, whose
        timer would otherwise never commit it (and the write lock would stay taken)."""
        group = db.open_group()
        if group is None:
            return
        if group.waiter is None:  # its work never came to wait for it
            db.commit_group(group)
            return
        group.waiter.timer.cancel()
        self._commit(group)

    def _commit(self, group: db.WriteGroup) -> None:
        pending = group.waiter
        # A lone work in a group, even one kept open for the window, means calls come one
        # at a time: the next group commits at once. Two or more mean calls overlap: the
        # next one waits for the window.
        self.calls_overlap = pending.works > 1
        try:
            db.commit_group(group)
        except Exception as error:
            log.warning("a group of writes was undone (%s); its calls run again", error)
            pending.committed.set_result(False)
        else:
            pending.committed.set_result(True)


class _Pending:
    """A write group's commit, as the event loop waits for it."""

    def __init__(self, committed: asyncio.Future, timer: asyncio.Handle) -> None:
        self.committed = committed
        self.timer = timer  # calls _commit
        self.works = 0  # that ran while the group was open, and wait for its commit


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
