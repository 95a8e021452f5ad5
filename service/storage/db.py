"""Opening the database named by a URL; the one place that knows SQLite from PostgreSQL."""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from typing import Any, TypeVar

import peewee
from playhouse import db_url
from playhouse.db_url import connect as connect_url
from playhouse.pool import PooledDatabase, PooledPostgresqlDatabase

T = TypeVar("T")

log = logging.getLogger(__name__)

# Models bind to this proxy; `open_database` points it at the real database.
database = peewee.DatabaseProxy()

DEFAULT_URL = "sqlite:///agenttasks.db"

_BUSY_TIMEOUT_MS = 30_000
_SQLITE_PRAGMAS = {
    "journal_mode": "wal",  # readers never wait for the writer
    "synchronous": "normal",  # durable across process crashes; WAL makes it safe
    "foreign_keys": 1,
    "busy_timeout": _BUSY_TIMEOUT_MS,  # writers queue instead of failing under contention
}


# PostgreSQL connections live in a pool per process (see `connected`). A thread that finds
# every connection taken waits this long for one, as long as a new connection may take to
# open (connect_timeout). Pools are sized so that this does not happen (one connection per
# thread that can touch the database, see service/connections.py): the wait is a safety net.
POOL_WAIT_S = 10
# Connections are closed once this old (when next handed out or given back) and opened
# afresh, so none lives forever (a backend's caches, a proxy's or a failover's changes).
# Not more often: Peewee opens a connection holding the pool's lock, so every other
# thread's check-out and return waits for that connect; once an hour per connection is
# rare enough not to show.
POOL_RECYCLE_S = 3600

# Errors that mean "the database is not answering": the connection is dropped, never reused.
DATABASE_DOWN = (peewee.OperationalError, peewee.InterfaceError)


class DatabaseUnavailable(Exception):
    """The database URL cannot be used; the message says why and what to do."""


_URL_FORMS = "sqlite:///relative.db, sqlite:////absolute/path.db or postgresql://user@host:5432/db"


def open_database(url: str = DEFAULT_URL, max_connections: int | None = None) -> peewee.Database:
    """Connect the models to the database at `url` (a Peewee `db_url`) and return it.

    Connects once at once, so a wrong URL fails here (DatabaseUnavailable) and not on the
    first call; a PostgreSQL database that does not exist is never created. PostgreSQL
    connections come from a pool of at most `max_connections` (None: no bound, for
    single-threaded commands); SQLite keeps one connection per thread.
    """
    if url.startswith("sqlite:///"):
        # IMMEDIATE: every transaction takes the write lock when it begins, so two
        # read-then-write transactions can never deadlock while upgrading their locks.
        db = connect_url(url, pragmas=_SQLITE_PRAGMAS, timeout=30, lock_type="IMMEDIATE")
    elif url.startswith(("postgres://", "postgresql://")):
        db = _postgres_pool(url, max_connections)
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


class _PostgresPool(PooledPostgresqlDatabase):
    """Peewee's PostgreSQL pool, checking the connections it hands out without a round trip.

    Peewee asks an idle connection `SELECT 1` before handing it out: one more round trip
    per call, as many as a cached GetTask makes in all. Here it looks at the socket instead.
    An idle connection in autocommit mode has nothing to read, so data waiting there means
    the server spoke unasked, which in practice is its goodbye (pg_terminate_backend, a
    restart, an idle timeout) or a closed socket: that connection is discarded and another
    taken or opened. The look is a system call, made after the pool's locks are released
    (made under them, it had every other thread queue behind each check-out). A connection
    lost silently (a dead network) still fails the call that uses it, as without a pool,
    and is dropped then (`connected`).
    """

    def connect(self, reuse_if_open: bool = False) -> bool:
        opened = super().connect(reuse_if_open)
        looks = len(self._connections) + 1  # each idle one at most once, then a new one
        while opened and looks and _has_input(self.connection()):
            looks -= 1
            self.discard()
            opened = super().connect(reuse_if_open)
        return opened

    def _is_closed(self, conn: Any) -> bool:  # under the pool's lock
        if conn.closed:
            return True
        if self._adapter.txn_status(conn) != self._adapter.txn_idle:
            return super()._is_closed(conn)  # rolls back, or finds it dead
        return False

    def discard(self) -> None:
        """Closes this thread's connection and takes it off the pool's books, so it is
        neither handed out again nor counted against the pool's size."""
        if self.is_closed():
            return
        self._close(self.connection(), close_conn=True)
        # This thread forgets it; PooledDatabase.dispose would empty the whole pool, other
        # threads' connections included.
        peewee.Database.dispose(self)


def _has_input(conn: Any) -> bool:
    """Whether the server sent anything (or hung up) on an idle connection."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return bool(poller.poll(0))  # input, hang-up or error


def _postgres_pool(url: str, max_connections: int | None) -> peewee.Database:
    params = db_url.parse(url)
    if not params.get("database"):
        raise DatabaseUnavailable(f"{safe_url(url)!r} names no database; use {_URL_FORMS}")
    # A black-holed host fails within seconds instead of hanging the start.
    params.setdefault("connect_timeout", 10)
    params.update(max_connections=max_connections, stale_timeout=POOL_RECYCLE_S)
    return _PostgresPool(timeout=POOL_WAIT_S, **params)


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


class WouldWait(Exception):
    """Work run by `run_without_waiting` needed SQLite's write lock while it was taken."""


class WriteGroup:
    """One transaction holding the writes of several works, committed once (see
    `run_without_waiting`): a page they share goes to the WAL once, not once for each."""

    def __init__(self, transaction: Any) -> None:
        self.transaction = transaction
        self.after_commit: list[Callable[[], None]] = []
        self.waiter: Any = None  # for whoever commits it (dbwork)


class _UnitOfWork(threading.local):
    """Work the outermost write transaction of this thread does around its commit."""

    def __init__(self) -> None:
        self.no_wait = False  # in run_without_waiting
        self.wrote = False  # ... and a write transaction there has ended (committed or grouped)
        self.grouping = False  # ... and its writes join this thread's group
        self.group: WriteGroup | None = None  # open until commit_group
        self.quick_connection: Any = None  # this thread's SQLite connection set not to wait
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
    In a write group (`run_without_waiting`) it is a savepoint of the group's transaction,
    and its `after_commit` callbacks wait for the group's commit.
    """
    if _unit.active:
        with database.atomic():
            yield
        return
    _unit.active = True
    try:
        group = _join_group() if _unit.grouping or _unit.group is not None else None
        with _one_writer_here() if group is None else nullcontext(), database.atomic():
            yield
            while _unit.before_commit:
                _unit.before_commit.pop(0)()
        _unit.wrote = _unit.no_wait
        if group is not None:
            group.after_commit.extend(_unit.after_commit)
            return
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
    if _unit.no_wait and not _unit.wrote:
        _take_writer_lock_now()
    else:
        if _unit.no_wait:  # a second write of work that wrote: it waits (see run_without_waiting)
            _set_busy_timeout(_BUSY_TIMEOUT_MS)
        _sqlite_writer.acquire()
    try:
        yield
    finally:
        _sqlite_writer.release()


def _take_writer_lock_now() -> None:
    """This process's writer lock, if no other thread holds it; else WouldWait."""
    if not _sqlite_writer.acquire(blocking=False):
        raise WouldWait()


def _join_group() -> WriteGroup:
    """This thread's write group, begun now (taking the write lock) if none is open."""
    if _unit.group is None:
        _take_writer_lock_now()
        transaction = database.transaction()
        try:
            # BEGIN IMMEDIATE, with this connection's busy timeout 0: another process's
            # lock fails it at once, and run_without_waiting makes that a WouldWait.
            transaction.__enter__()
        except BaseException:
            _sqlite_writer.release()
            raise
        _unit.group = WriteGroup(transaction)
    return _unit.group


def open_group() -> WriteGroup | None:
    """This thread's write group, while one is open (until `commit_group`)."""
    return _unit.group


def commit_group(group: WriteGroup) -> None:
    """Commits the group's writes and runs their `after_commit` callbacks; if the commit
    fails (or the group was abandoned after a database error), everything in it is undone
    and the error raised."""
    if group.transaction is None:
        raise peewee.OperationalError("the write group was abandoned after a database error")
    assert _unit.group is group, "commit_group: not this thread's open group"
    _unit.group = None
    try:
        _end(group, commit=True)  # rolls back if the commit fails
    except DATABASE_DOWN:
        drop_connection()
        raise
    for callback in group.after_commit:
        try:
            callback()
        except Exception:  # committed all the same: the works must not run again
            log.exception("a callback after a group's commit failed")


def _abandon_group() -> None:
    """Rolls the open group back after a database error (its works must run again)."""
    group, _unit.group = _unit.group, None
    if group is not None:
        with suppress(*DATABASE_DOWN):
            _end(group, commit=False)


def _end(group: WriteGroup, *, commit: bool) -> None:
    """Commits or rolls back the group's transaction and gives the writer lock back."""
    transaction, group.transaction = group.transaction, None
    try:
        transaction.__exit__(None if commit else WouldWait, None, None)
    finally:
        _sqlite_writer.release()


def _set_busy_timeout(milliseconds: int) -> None:
    database.execute_sql(f"PRAGMA busy_timeout = {int(milliseconds)}")
    _unit.quick_connection = database.connection() if milliseconds == 0 else None
    if milliseconds == 0:  # nor checkpoint: a thread of its own does (storage.checkpoints)
        database.execute_sql("PRAGMA wal_autocheckpoint = 0")


def run_without_waiting(function: Callable[..., T], /, *args: Any, group: bool = False) -> T:
    """`function(*args)` as one unit of work (`connected`) on a thread that must never wait
    for SQLite's write lock: the event loop's. SQLite only.

    The work's first write transaction starts only if the lock is free at once, in this
    process (other threads) and in others (busy timeout 0 on this thread's connection);
    otherwise WouldWait is raised before anything is written, and the caller runs the whole
    work again where waiting is fine. Once something was written, running it again would
    write twice: a later write transaction of the same work waits for the lock as usual.

    Its commits never make a checkpoint either, which would hold the loop for the fsyncs:
    whoever runs work here runs a `storage.checkpoints.Checkpointer` (the server does).

    With `group`, its writes are not committed but join this thread's write group: one
    transaction, begun by the first write (as above), in which each work's write
    transaction is a savepoint. The caller answers nobody from the work (nor from any work
    run while the group is open, which may have read its writes) before `commit_group`
    has committed it; if that fails, everything the group held was undone, and its works
    run again.
    """
    if database.connection() is not _unit.quick_connection:
        _set_busy_timeout(0)
    _unit.no_wait, _unit.wrote, _unit.grouping = True, False, group
    try:
        return function(*args)
    except DATABASE_DOWN as error:
        # SQLITE_BUSY before any write (a reader meeting a checkpoint, say): wait elsewhere.
        # Any other database error drops the connection, as `connected` does.
        if not _unit.wrote and _unit.group is None and "locked" in str(error):
            raise WouldWait() from error
        _abandon_group()
        drop_connection()
        raise
    finally:
        _unit.no_wait = _unit.wrote = _unit.grouping = False


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
    """Closes the database: every pooled PostgreSQL connection of this process (before a
    fork, or when done with it), or this thread's SQLite connection."""
    db = database.obj
    if isinstance(db, PooledDatabase):
        db.close_all()
    elif db is not None and not db.is_closed():
        db.close()


@contextmanager
def connected() -> Iterator[None]:
    """One unit of work on this thread: a call's run on the database threads, one tick of
    a background job, one webhook delivery.

    On PostgreSQL the connection the work took from the pool goes back to it when the work
    ends; without that a thread would keep its connection forever, and the pool would run
    dry. SQLite keeps each thread's connection open across units (opening one per call
    costs more than the call). On either, a connection that failed with a database error
    (DATABASE_DOWN) is dropped, never reused: the next query opens a new one.
    """
    try:
        yield
    except DATABASE_DOWN:
        drop_connection()
        raise
    finally:
        release_connection()


def run_connected(function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`function(*args, **kwargs)` as one unit of work (`connected`)."""
    with connected():
        return function(*args, **kwargs)


def release_connection() -> None:
    """Gives this thread's PostgreSQL connection back to the pool (a no-op on SQLite, and
    when the thread holds none)."""
    db = database.obj
    if not isinstance(db, PooledDatabase) or db.is_closed():
        return
    try:
        db.close()  # the pool takes it back, or closes it if it is broken or too old
    except peewee.PeeweeException:  # a transaction left open: do not hand that out again
        drop_connection()


def drop_connection() -> None:
    """Forget this thread's connection after a database error; the next query reconnects.

    A connection the server dropped stays broken, so a worker that keeps it would fail
    forever after the database comes back; a pooled one is never handed out again.
    """
    db = database.obj
    if db is None:
        return
    if isinstance(db, _PostgresPool):
        db.discard()
        return
    try:
        db.close()
    except peewee.PeeweeException:
        db.dispose()  # closing failed (e.g. a transaction left open): just forget it


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
