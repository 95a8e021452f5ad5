"""Numbered schema migrations, applied in order, each once, under a cross-process lock.

Rule for the next person: never change what an applied migration does. Migration 1
creates the tables as the models stood when it was written; a later change to a model
ships as a new numbered migration (`playhouse.migrate` operations), so an existing
database upgrades without loss and a new one ends up identical.
"""

from __future__ import annotations

from collections.abc import Callable

from ..domain.values import now_us
from . import m004_queue
from .db import database, lock_for_migration, write_transaction
from .models import MODELS, SchemaMigration


def _initial_schema() -> None:
    database.create_tables(MODELS, safe=True)


MIGRATIONS: list[tuple[int, str, Callable[[], None]]] = [
    (1, "initial schema", _initial_schema),
    (4, "work queue", m004_queue.apply),
]


def migrate() -> list[int]:
    """Bring the schema up to date; returns the versions applied now. Safe to run concurrently."""
    applied_now = []
    with write_transaction():
        lock_for_migration()
        database.create_tables([SchemaMigration], safe=True)
        done = {row.version for row in SchemaMigration.select(SchemaMigration.version)}
        for version, name, apply in MIGRATIONS:
            if version in done:
                continue
            apply()
            SchemaMigration.create(version=version, name=name, applied_at=now_us())
            applied_now.append(version)
    return applied_now


def current_version() -> int:
    row = SchemaMigration.select(SchemaMigration.version).order_by(-SchemaMigration.version).first()
    return row.version if row else 0
