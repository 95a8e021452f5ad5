"""Replies of overlapping calls leave together.

Under load the server (and its clients) spend more time waking up than working: each reply
sent on its own is a write by gRPC core, a wake-up of its event engine threads and one of
the client. While calls overlap (the last batch of replies held more than one), a ready
reply waits up to REPLY_WINDOW_S for those that become ready meanwhile, and they leave in
the same turn of the event loop, so gRPC core sends them in fewer writes and clients read
several at a wake-up. Otherwise it leaves on the next turn: a lone client waits for nobody.

Measured with `make bench` (SQLite, 64 calls in flight, alternated rounds): GetTask went
from 3,890 to 5,470 calls/s, at 202 µs of server CPU per call instead of 285; its p99 from
23 to 26 ms. A write group's replies already leave together, at its commit: they do not
wait again (that cost writes a few per cent).
"""

from __future__ import annotations

from ..batches import Batch, Gathering

# The longest a ready reply waits for others: small beside a call's latency under load
# (15 ms at the median above). 1 ms gained half as much; 3 ms no more, with a longer p99.
REPLY_WINDOW_S = 0.002


class Replies(Gathering):
    """The replies of the unary calls of one server (on its event loop)."""

    def __init__(self) -> None:
        super().__init__(lambda: REPLY_WINDOW_S)
        self._batch: Batch | None = None

    async def ready(self) -> None:
        """Returns when the calling call's reply may leave (module note)."""
        if self._batch is None:
            self._batch = self.open(self._left)
        await self._batch.join()

    def _left(self) -> None:
        self._batch = None
