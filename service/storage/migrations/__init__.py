"""Numbered schema migrations, applied in order, each once, under a cross-process lock.

Rule for the next person: never change what an applied migration does. Each migration
is a module `mNNN_<what>.py` with an `apply()` that works on models frozen inside it
(never the live ones in `models.py`), so a database created by any release upgrades to
exactly the schema a new one gets. A change to a model ships as the next module here,
with `models.py` changed to match what it builds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..db import database, lock_for_migration, write_transaction
from ..models import SchemaMigration
from . import (
    m001_initial,
    m002_event_record,
    m003_rate_limits,
    m004_webhooks,
    m005_queue,
    m006_lean_task_indexes,
    m007_partial_indexes,
)


class SchemaTooNew(Exception):
    """The database was migrated by a newer agenttasks than this one."""

    def __init__(self, database_version: int, known_version: int) -> None:
        super().__init__(
            f"database schema is at version {database_version} but this agenttasks knows up "
            f"to {known_version}: upgrade agenttasks (then run `agenttasks migrate`)"
        )
        self.database_version = database_version
        self.known_version = known_version


MIGRATIONS: list[tuple[int, str, Callable[[], None]]] = [
    (1, "initial schema", m001_initial.apply),
    (2, "task event record", m002_event_record.apply),
    (3, "rate limits", m003_rate_limits.apply),
    (4, "webhooks", m004_webhooks.apply),
    (5, "work queue", m005_queue.apply),
    (6, "lean task indexes", m006_lean_task_indexes.apply),
    (7, "partial indexes", m007_partial_indexes.apply),
]


def migrate() -> list[int]:
    """Bring the schema up to date; returns the versions applied now. Safe to run concurrently.

    Raises `SchemaTooNew`, changing nothing, when the database is ahead of this code:
    running old code on a newer schema could write rows the newer code misreads.
    """
    applied_now = []
    with write_transaction():
        lock_for_migration()
        database.create_tables([SchemaMigration], safe=True)
        done = {row.version for row in SchemaMigration.select(SchemaMigration.version)}
        known = max(version for version, _, _ in MIGRATIONS)
        if done and max(done) > known:
            raise SchemaTooNew(max(done), known)
        for version, name, apply in MIGRATIONS:
            if version in done:
                continue
            apply()
            SchemaMigration.create(version=version, name=name, applied_at=time.time_ns() // 1000)
            applied_now.append(version)
    return applied_now


def current_version() -> int:
    row = SchemaMigration.select(SchemaMigration.version).order_by(-SchemaMigration.version).first()
    return row.version if row else 0
