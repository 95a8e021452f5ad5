"""Replies of overlapping calls leave together.

Under load the server (and its clients) spend more time waking up than working: each reply
sent on its own is a write by gRPC core, a wake-up of its event engine threads and one of
the client. A reply that is ready while other calls are still being handled waits up to
REPLY_WINDOW_S for the replies that become ready meanwhile, and they leave in the same
turn of the event loop, so gRPC core sends them in fewer writes and clients read several at
a wake-up. A call that is alone is answered at once: a lone client waits for nobody.

Measured with `make bench` (SQLite, 64 calls in flight): GetTask answered about 4,000
calls/s without this and 5,150 with it, at 213 µs of server CPU per call instead of 286,
and its p99 fell from 23 to 16 ms (five alternated rounds).
"""

from __future__ import annotations

import asyncio

# The longest a ready reply waits for others; a millisecond is a small share of a call's
# latency under load (15 ms at the median above) and gathers a few dozen replies.
REPLY_WINDOW_S = 0.002


class Replies:
    """The replies of the unary calls of one server (on its event loop)."""

    def __init__(self) -> None:
        self._batch: _Batch | None = None
        # Whether the last batch held more than one reply: calls overlap, and the next
        # batch waits the window; otherwise it leaves on the next turn of the loop.
        self.calls_overlap = False

    async def ready(self) -> None:
        """Returns when the calling call's reply may leave (module note)."""
        batch = self._batch
        if batch is None:
            loop = asyncio.get_running_loop()
            delay = REPLY_WINDOW_S if self.calls_overlap else 0.0
            batch = self._batch = _Batch(loop.create_future())
            loop.call_later(delay, self._release)
        batch.replies += 1
        # Shielded: a call cancelled while it waits must not cancel the batch for the others.
        await asyncio.shield(batch.leaves)

    def _release(self) -> None:
        batch, self._batch = self._batch, None
        if batch is not None:
            self.calls_overlap = batch.replies > 1
            batch.leaves.set_result(None)


class _Batch:
    def __init__(self, leaves: asyncio.Future[None]) -> None:
        self.leaves = leaves
        self.replies = 0
