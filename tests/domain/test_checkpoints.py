"""SQLite checkpoints happen off the event loop (storage.checkpoints).

The loop's connection (storage.db.run_without_waiting) never copies the log back into the
database file, which SQLite's default makes the commit that passes 1,000 pages do; a
Checkpointer thread does it instead, soon after the writes, and quietly once they stop.
"""

from __future__ import annotations

import os
import time

import pytest

from agenttasks.server.domain import projects, tasks, teams
from agenttasks.server.domain.values import Caller, TokenKind
from agenttasks.server.storage import checkpoints, db

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

PAGES_PAST_THE_DEFAULT = 1500  # SQLite's default checkpoints once the log passes 1,000


@pytest.fixture
def paths(database_url) -> tuple[str, str]:
    path = database_url.removeprefix("sqlite:///")
    return path, path + "-wal"


def create_on_the_loop_connection(pages: int) -> None:
    """Creates tasks as the event loop does, until the log holds `pages` more pages."""
    team, _ = teams.create_team("Checkpoints")
    caller = Caller(team.id, TokenKind.TEAM_API_KEY)
    project = db.run_without_waiting(projects.create_project, caller, "", "P", "", "")
    for _ in range(pages // 5):  # each create writes more than 5 pages
        db.run_without_waiting(tasks.create_task, caller, "", project.id, "t", "x" * 500)


def wait_until(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_the_loop_connection_never_copies_the_log_back(paths):
    database_file, log_file = paths
    db.database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    size_before = os.path.getsize(database_file)

    create_on_the_loop_connection(PAGES_PAST_THE_DEFAULT)

    # Only checkpoints write the database file: its size is that of before the writes.
    assert os.path.getsize(log_file) > PAGES_PAST_THE_DEFAULT * 4096
    assert os.path.getsize(database_file) == size_before


def test_a_checkpointer_copies_the_log_back_soon_after_the_writes(paths):
    database_file, _ = paths
    db.database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    size_before = os.path.getsize(database_file)
    checkpointer = checkpoints.Checkpointer().start()
    try:
        create_on_the_loop_connection(PAGES_PAST_THE_DEFAULT)

        # This thread's connection makes no checkpoints: the file grows by the other's.
        assert wait_until(lambda: os.path.getsize(database_file) > size_before)
    finally:
        checkpointer.stop()


def test_an_idle_checkpointer_looks_once_a_second(paths, monkeypatch):
    looks = []
    real = checkpoints.checkpoint
    monkeypatch.setattr(checkpoints, "checkpoint", lambda: looks.append(1) or real())
    checkpointer = checkpoints.Checkpointer().start()
    try:
        time.sleep(1.2)
    finally:
        checkpointer.stop()

    # One look at the busy interval finds the log as it was, then the idle interval.
    assert 1 <= len(looks) <= 3
