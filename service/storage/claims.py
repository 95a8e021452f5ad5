"""Keeping background workers alive across database outages."""

from __future__ import annotations

import peewee

from .db import database


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
