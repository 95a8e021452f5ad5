"""How many database connections one process holds at most: the size of its PostgreSQL pool.

Every thread that touches the database holds at most one connection, and only while it
works (storage.db.connected), so a pool with one connection per such thread never makes a
thread wait for one:

- serving: the `--max-workers` database threads, which run every call's admission and
  handler, ClaimNextTask attempts and WatchTasks reads, the health check and the poll of
  waiting calls;
- background jobs: one thread per job during its tick, and one per webhook sending thread
  during a delivery (workers.jobs.connections_needed);
- one more: the main thread's, which migrates and creates the default team at start and
  gives it back before calls or jobs run; after that /metrics scrapes borrow it.

A smaller pool would only make threads queue for connections, as fewer threads would: to
use fewer connections, lower `--max-workers`. Connections are opened when first needed, so
a process opens only as many as it ever used at once.
"""

from __future__ import annotations

from .config import ServerConfig
from .workers.jobs import connections_needed

MAIN_THREAD = 1


def pool_size(config: ServerConfig, *, serving: bool) -> int:
    """The most connections a process with `config` holds: `agenttasks serve` (serving)
    or `agenttasks worker` (jobs only)."""
    calls = config.max_workers if serving else 0
    return calls + connections_needed(config) + MAIN_THREAD
