"""Batches on the event loop whose members all resume together when the batch ends.

Write groups (dbwork) commit when theirs ends; replies (api/replies.py) leave when theirs
does. The first member opens a batch. It ends on the next turn of the loop while members
come one at a time (the last batch held one), and after the window, or once it holds `most`
members, while they overlap (the last batch held more): a lone caller waits for nobody,
overlapping ones wait a few milliseconds for company.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class Gathering:
    """Opens batches, and remembers from the last one whether calls overlap."""

    def __init__(self, window: Callable[[], float], most: int = 0) -> None:
        self._window = window  # seconds a batch stays open while calls overlap
        self._most = most  # members that end a batch at once (0: no such bound)
        self.calls_overlap = False  # whether the last batch held more than one member

    def open(self, end: Callable[[], Any]) -> Batch:
        """A new batch: `end()` runs when it ends, and its members get what it returns."""
        delay = self._window() if self.calls_overlap else 0.0
        return Batch(self, end, delay)


class Batch:
    def __init__(self, gathering: Gathering, end: Callable[[], Any], delay: float) -> None:
        self._gathering = gathering
        self._end = end
        self._loop = asyncio.get_running_loop()
        self._ended: asyncio.Future[Any] = self._loop.create_future()
        self._timer: asyncio.Handle = self._loop.call_later(delay, self.end_now)
        self.members = 0

    async def join(self) -> Any:
        """Waits for the batch to end; what its `end()` returned."""
        self.members += 1
        if self.members == self._gathering._most:
            self._timer.cancel()
            self._timer = self._loop.call_soon(self.end_now)
        # Shielded: a member cancelled while it waits must not cancel the batch for the others.
        return await asyncio.shield(self._ended)

    def end_now(self) -> None:
        """Ends the batch (its timer does; or its owner, before the loop stops)."""
        if self._ended.done():
            return
        self._timer.cancel()
        # A lone member, even of a batch kept open for the window, means calls come one at a
        # time: the next batch ends at once. Two or more mean they overlap: it waits.
        self._gathering.calls_overlap = self.members > 1
        self._ended.set_result(self._end())
