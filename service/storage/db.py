"""Opening the database named by a URL; the one place that knows SQLite from PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import peewee
from playhouse.db_url import connect as connect_url

# Models bind to this proxy; `open_database` points it at the real database.
database = peewee.DatabaseProxy()

DEFAULT_URL = "sqlite:///agenttasks.db"

_SQLITE_PRAGMAS = {
    "journal_mode": "wal",  # readers never wait for the writer
    "synchronous": "normal",  # durable across process crashes; WAL makes it safe
    "foreign_keys": 1,
    "busy_timeout": 30_000,  # ms: writers queue instead of failing under contention
}


def open_database(url: str = DEFAULT_URL) -> peewee.Database:
    """Connect the models to the database at `url` (a Peewee `db_url`) and return it."""
    if url.startswith("sqlite"):
        # IMMEDIATE: every transaction takes the write lock when it begins, so two
        # read-then-write transactions can never deadlock while upgrading their locks.
        db = connect_url(url, pragmas=_SQLITE_PRAGMAS, timeout=30, lock_type="IMMEDIATE")
    elif url.startswith(("postgres://", "postgresql://")):
        db = connect_url(url)
    else:
        raise ValueError(f"unsupported database URL scheme: {url.split(':', 1)[0]!r}")
    database.initialize(db)
    return db


def is_postgres() -> bool:
    return isinstance(database.obj, peewee.PostgresqlDatabase)


def sql(statement: str) -> str:
    """Adapt a statement written with `?` placeholders to the open database's style."""
    return statement.replace("?", database.obj.param) if is_postgres() else statement


class _UnitOfWork(threading.local):
    """Work the outermost write transaction of this thread does around its commit."""

    def __init__(self) -> None:
        self.active = False
        self.before_commit: list[Callable[[], None]] = []
        self.after_commit: list[Callable[[], None]] = []
        self.state: dict[str, Any] = {}


_unit = _UnitOfWork()


@contextmanager
def write_transaction() -> Iterator[None]:
    """A transaction for work that writes; nested calls join the outer one.

    The outermost one runs the `before_commit` callbacks last inside the transaction
    (events are inserted there, see storage.events) and `after_commit` ones once committed.
    """
    if _unit.active:
        with database.atomic():
            yield
        return
    _unit.active = True
    try:
        with database.atomic():
            yield
            while _unit.before_commit:
                _unit.before_commit.pop(0)()
        for callback in _unit.after_commit:
            callback()
    finally:
        _unit.active = False
        _unit.before_commit.clear()
        _unit.after_commit.clear()
        _unit.state.clear()


def transaction_state() -> dict[str, Any]:
    """Scratch space of the current write transaction, emptied when it ends."""
    if not _unit.active:
        raise RuntimeError("transaction_state needs a write_transaction()")
    return _unit.state


def before_commit(callback: Callable[[], None]) -> None:
    """Runs `callback` as the last work of the current write transaction."""
    if not _unit.active:
        raise RuntimeError("before_commit needs a write_transaction()")
    _unit.before_commit.append(callback)


def after_commit(callback: Callable[[], None]) -> None:
    """Runs `callback` once the current write transaction has committed (never on rollback)."""
    if not _unit.active:
        raise RuntimeError("after_commit needs a write_transaction()")
    _unit.after_commit.append(callback)


def lock_for_migration() -> None:
    """Serialise schema changes between processes (call inside a transaction)."""
    if is_postgres():
        database.execute_sql("SELECT pg_advisory_xact_lock(7451001)")
    # SQLite: the IMMEDIATE transaction already holds the database's write lock.


def close() -> None:
    if database.obj is not None and not database.is_closed():
        database.close()


def for_update(query):
    """Lock the selected rows until the transaction ends.

    PostgreSQL locks the rows; SQLite needs nothing, since its IMMEDIATE transaction
    already holds the database's single write lock.
    """
    return query.for_update() if is_postgres() else query


def skip_locked(query):
    """Lock the selected rows until the transaction ends, passing over rows already locked.

    Callers in many processes (claim-next, workers) then pick from the same rows at once,
    each taking a different share, instead of queueing behind one another. SQLite needs
    nothing: its IMMEDIATE transaction already holds the database's single write lock.
    """
    return query.for_update(skip_locked=True) if is_postgres() else query
