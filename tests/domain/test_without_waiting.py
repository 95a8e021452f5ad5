"""Work on the event loop never waits for SQLite's write lock (storage.db.run_without_waiting).

Its first write starts only if the lock is free at once; otherwise it is refused before
anything is written, so the caller can run the whole work again on a thread that may wait.
Held by another thread of this process or by another connection (as another process
would), the same.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from agenttasks.server.domain import projects, tasks, teams
from agenttasks.server.domain.values import Caller, TokenKind
from agenttasks.server.storage import db
from agenttasks.server.storage.models import Task

from ..helpers import lock_held_by_another_connection


@pytest.fixture
def made(database_url):
    team, _ = teams.create_team("Waiting")
    caller = Caller(team.id, TokenKind.TEAM_API_KEY)
    return caller, projects.create_project(caller, "", "P", "", "")


# SQLite's database-wide write lock; PostgreSQL has none.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def sqlite_path(database_url) -> str:
    return database_url.removeprefix("sqlite:///")


@contextmanager
def lock_held_by_another_thread() -> Iterator[threading.Event]:
    """This process's writer lock, held by another thread until the event is set."""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db.write_transaction():
            taken.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    taken.wait(10)
    try:
        yield release
    finally:
        release.set()
        holder.join()


def _count(project) -> int:
    return Task.select().where(Task.project == project.id).count()


def test_a_write_is_refused_while_another_thread_writes(made, sqlite_path):
    caller, project = made
    with lock_held_by_another_thread(), pytest.raises(db.WouldWait):
        db.run_without_waiting(tasks.create_task, caller, "", project.id, "not now")
    assert _count(project) == 0 and not db.in_write_transaction()


def test_a_write_is_refused_at_once_while_another_process_writes(made, sqlite_path):
    caller, project = made
    started = time.monotonic()
    with lock_held_by_another_connection(sqlite_path), pytest.raises(db.WouldWait):
        db.run_without_waiting(tasks.create_task, caller, "", project.id, "not now")
    assert time.monotonic() - started < 5  # not the 30 s busy timeout
    assert _count(project) == 0
    tasks.create_task(caller, "", project.id, "now")  # outside, this connection waits again
    assert _count(project) == 1


def test_reads_go_on_while_another_process_writes(made, sqlite_path):
    caller, project = made
    task = tasks.create_task(caller, "", project.id, "readable")
    with lock_held_by_another_connection(sqlite_path):
        assert db.run_without_waiting(tasks.get_task, caller, task.id).title == "readable"


def test_after_a_write_a_second_one_waits_instead_of_being_refused(made, sqlite_path):
    caller, project = made

    def two_writes() -> None:
        tasks.create_task(caller, "", project.id, "first")
        with lock_held_by_another_thread() as release:
            threading.Timer(0.2, release.set).start()
            tasks.create_task(caller, "", project.id, "second")  # waits for the release

    db.run_without_waiting(two_writes)
    assert _count(project) == 2
