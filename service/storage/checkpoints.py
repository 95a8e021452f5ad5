"""SQLite checkpoints, made by a thread of their own instead of by the event loop's commits.

A WAL database appends each commit to its log, and a checkpoint copies the log back into
the database file, with an fsync of each. By default the commit that takes the log past
1,000 pages makes the checkpoint itself: on the event loop (see dbwork) every call then
waited several milliseconds, about once every 60 to 80 creates, and the loop's commits
took a third longer on average. The event loop's connection turns that off
(`db.run_without_waiting`), and a server running work there runs this thread, which makes
the same PASSIVE checkpoints (never waiting for readers or writers) on the other core.

Every process of `serve --workers N` runs one; a checkpoint that finds another running
does nothing. Other connections (the database threads, background jobs, commands) keep
SQLite's default, so the log is still folded back when no server runs.
"""

from __future__ import annotations

import logging
import threading

from .db import DATABASE_DOWN, database, drop_connection

log = logging.getLogger(__name__)

# Under writes, a checkpoint every BUSY_INTERVAL s keeps the log near the size SQLite's
# default keeps it at (1,000 pages: some 80 creates); idle, the thread looks once a second.
BUSY_INTERVAL_S = 0.05
IDLE_INTERVAL_S = 1.0


class Checkpointer:
    """Runs `PRAGMA wal_checkpoint(PASSIVE)` in a daemon thread until stopped."""

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoints", daemon=True)

    def start(self) -> Checkpointer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        interval, last = BUSY_INTERVAL_S, None
        while not self._stopping.wait(interval):
            log_state = checkpoint()
            interval = BUSY_INTERVAL_S if log_state != last else IDLE_INTERVAL_S
            last = log_state
        drop_connection()


def checkpoint() -> tuple[int, int] | None:
    """One passive checkpoint: the pages in the log and those copied back (both stay as
    they are while nobody writes), or None if it failed."""
    try:
        _busy, logged, copied = database.execute_sql("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    except DATABASE_DOWN as error:  # the disk or the file went away: try again later
        log.warning("SQLite checkpoint failed (%s); trying again", error)
        drop_connection()
        return None
    return logged, copied
