"""Claiming rows for background work, so that each row is handled by one worker at a time."""

from __future__ import annotations

import peewee

from .db import database, is_postgres


def skip_locked(query):
    """Lock the selected rows until the transaction ends, passing over rows already locked.

    Workers in many processes can then pick from the same rows at once, each taking a
    different share, instead of queueing behind one another. SQLite needs nothing: its
    IMMEDIATE transaction already holds the database's single write lock, so one worker
    picks at a time.
    """
    return query.for_update(skip_locked=True) if is_postgres() else query


def drop_connection() -> None:
    """Forget this thread's connection after a database error; the next query reconnects.

    A connection the server dropped stays broken, so a worker that keeps it would fail
    forever after the database comes back.
    """
    if database.obj is None:
        return
    try:
        database.close()
    except peewee.PeeweeException:
        database.obj.dispose()  # closing failed (e.g. a transaction left open): just forget it
