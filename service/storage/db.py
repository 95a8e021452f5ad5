"""Opening the database named by a URL; the one place that knows SQLite from PostgreSQL."""

from __future__ import annotations

import os
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


class DatabaseUnavailable(Exception):
    """The database URL cannot be used; the message says why and what to do."""


_URL_FORMS = "sqlite:///relative.db, sqlite:////absolute/path.db or postgresql://user@host:5432/db"


def open_database(url: str = DEFAULT_URL) -> peewee.Database:
    """Connect the models to the database at `url` (a Peewee `db_url`) and return it.

    Connects once at once, so a wrong URL fails here (DatabaseUnavailable) and not on the
    first call; a PostgreSQL database that does not exist is never created.
    """
    if url.startswith("sqlite:///"):
        # IMMEDIATE: every transaction takes the write lock when it begins, so two
        # read-then-write transactions can never deadlock while upgrading their locks.
        db = connect_url(url, pragmas=_SQLITE_PRAGMAS, timeout=30, lock_type="IMMEDIATE")
    elif url.startswith(("postgres://", "postgresql://")):
        # A black-holed host fails within seconds instead of hanging the start.
        db = connect_url(url) if "connect_timeout" in url else connect_url(url, connect_timeout=10)
    else:
        raise DatabaseUnavailable(
            f"{safe_url(url)!r} is not a supported database URL; use {_URL_FORMS}"
        )
    try:
        db.connect(reuse_if_open=True)
    except peewee.OperationalError as error:
        raise DatabaseUnavailable(_explain(db, url, error)) from None
    database.initialize(db)
    return db


def _explain(db: peewee.Database, url: str, error: Exception) -> str:
    reason = " ".join(str(error).split())
    if isinstance(db, peewee.SqliteDatabase):
        return (
            f"cannot open the SQLite database {os.path.abspath(db.database)!r} ({reason}): "
            "check that its directory exists and is writable; sqlite:///x.db is relative to "
            "the working directory, sqlite:////abs/x.db is absolute"
        )
    if "does not exist" in reason and "database" in reason:
        advice = "create it first (createdb, or CREATE DATABASE) or fix the URL"
    elif "refused" in reason or "could not connect" in reason or "timeout" in reason:
        advice = "check that PostgreSQL runs there and the host and port are right"
    else:
        advice = "check the URL, the user and its password"
    return f"cannot connect to {safe_url(url)}: {reason}; {advice}"


def safe_url(url: str) -> str:
    """The URL without a password."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if at and ":" in credentials:
        return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"
    return url


def is_postgres() -> bool:
    return isinstance(database.obj, peewee.PostgresqlDatabase)


def sql(statement: str) -> str:
    """Adapt a statement written with `?` placeholders to the open database's style."""
    return statement.replace("?", database.obj.param) if is_postgres() else statement


class WriteNotHere(Exception):
    """A write transaction was started inside `reads_only()`."""


class _UnitOfWork(threading.local):
    """Work the outermost write transaction of this thread does around its commit."""

    def __init__(self) -> None:
        self.reads_only = False
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
    if _unit.reads_only:
        raise WriteNotHere()
    if _unit.active:
        with database.atomic():
            yield
        return
    _unit.active = True
    try:
        with _one_writer_here(), database.atomic():
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


# SQLite has one writer at a time, and a writer that finds the lock taken sleeps in steps of
# up to 100 ms (busy_timeout) before it looks again: with many threads, most of a write's
# time went to those sleeps. Threads of one process queue on this lock instead, each woken
# the moment the last one commits; other processes still meet at the busy_timeout.
_sqlite_writer = threading.Lock()


@contextmanager
def _one_writer_here() -> Iterator[None]:
    if is_postgres():
        yield
        return
    with _sqlite_writer:
        yield


@contextmanager
def reads_only() -> Iterator[None]:
    """Work that must not write: a `write_transaction` started inside raises WriteNotHere
    before it touches the database (every write goes through one)."""
    _unit.reads_only = True
    try:
        yield
    finally:
        _unit.reads_only = False


def in_write_transaction() -> bool:
    return _unit.active


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
