"""Event retention: task events older than the retention are deleted, oldest first."""

from __future__ import annotations

from peewee import fn

from ..storage import events
from ..storage.db import skip_locked, write_transaction
from ..storage.models import TaskEvent


def delete_events_before(cutoff_us: int, limit: int = 1000) -> int:
    """Deletes up to `limit` of the oldest events created before `cutoff_us`; returns how many.

    Picks by `event_id` (the primary key, so no scan of the table): events are numbered
    in about the order they were written, so the oldest ids are the oldest events. An
    event a little out of order waits for a later run. Rows another worker is deleting
    are skipped, not waited for.

    The newest event of the database stays, however old: SQLite numbers a new row one
    above the largest id left in the table, so with that one deleted ids would be handed
    out again, and a cursor past them (WatchTasks, the webhook fan-out) would pass over
    the new events. (PostgreSQL's sequence never goes back; keeping one row costs nothing.)
    """
    oldest = (
        TaskEvent.select(TaskEvent.event_id, TaskEvent.created_at)
        .order_by(TaskEvent.event_id)
        .limit(limit)
    )
    with write_transaction():
        newest = TaskEvent.select(fn.MAX(TaskEvent.event_id)).scalar()
        doomed = [
            row.event_id
            for row in skip_locked(oldest)
            if row.created_at < cutoff_us and row.event_id != newest
        ]
        if not doomed:
            return 0
        events.note_retention(max(doomed))  # resumed WatchTasks cursors below it are refused
        return TaskEvent.delete().where(TaskEvent.event_id.in_(doomed)).execute()
