"""Where long waits park: on the event loop, woken by new task events of their team.

A waiter says which event of its team it has seen, then waits. It wakes when a write
transaction of this process commits events of that team (storage.events listeners), or
when a poll, run twice a second while anyone waits, finds a newer event of that team
written by another process. So a ClaimNextTask or WatchTasks call wakes within a second
of a change anywhere, and holds no thread while it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from .dbwork import DatabaseWork
from .storage import events

log = logging.getLogger(__name__)
POLL_SECONDS = 0.5


@dataclass(eq=False)
class _Waiter:
    seen_event_id: int
    woken: asyncio.Event = field(default_factory=asyncio.Event)


class WaitHub:
    """Parks waiters per team on one event loop; thread-safe `notify`."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        work: DatabaseWork,
        newest_of_teams: Callable[[list[str]], dict[str, int]] = events.newest_of_teams,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self._loop = loop
        self.run = work.run  # database work of the waiting calls, where it belongs
        self._newest_of_teams = newest_of_teams
        self._poll_seconds = poll_seconds
        self._waiters: dict[str, set[_Waiter]] = {}
        self._poller: asyncio.Task | None = None

    def start(self) -> None:
        """Listens to this process's commits and starts the poll for other processes'."""
        events.listeners.append(self.notify)
        self._poller = self._loop.create_task(self._poll())

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            events.listeners.remove(self.notify)
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller

    @property
    def waiting(self) -> int:
        return sum(len(waiters) for waiters in self._waiters.values())

    def notify(self, team_ids: set[str]) -> None:
        """New events of these teams were committed (any thread).

        Writes with nobody waiting on their team skip the hop to the loop. A waiter that
        registers just after such a check is still woken by the poll (its `seen` is older).
        """
        if any(team_id in self._waiters for team_id in team_ids):
            self._loop.call_soon_threadsafe(self._wake, team_ids, None)

    def _wake(self, team_ids, newest: dict[str, int] | None) -> None:
        for team_id in team_ids:
            for waiter in self._waiters.get(team_id, ()):
                if newest is None or waiter.seen_event_id < newest[team_id]:
                    waiter.woken.set()

    async def wait(self, team_id: str, seen_event_id: int, timeout: float) -> bool:
        """Waits until the team has an event newer than `seen_event_id` (True) or `timeout`."""
        waiter = _Waiter(seen_event_id)
        self._waiters.setdefault(team_id, set()).add(waiter)
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                await waiter.woken.wait()
            return True
        except TimeoutError:
            return False
        finally:
            team_waiters = self._waiters[team_id]
            team_waiters.discard(waiter)
            if not team_waiters:
                del self._waiters[team_id]

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_seconds)
            if not self._waiters:
                continue
            teams = list(self._waiters)
            try:
                newest = await self.run(self._newest_of_teams, teams)
            except Exception as error:  # the database may be away; waiters time out anyway
                log.warning("polling for new events failed: %s", type(error).__name__)
                continue
            self._wake(newest.keys(), newest)
