"""The event cursor never skips an event that commits after a later one was read."""

from __future__ import annotations

import threading

import pytest

from agenttasks.server.domain import events, projects, tasks, teams
from agenttasks.server.domain.values import Caller, TokenKind
from agenttasks.server.storage import db
from agenttasks.server.storage.models import TaskEvent


@pytest.fixture
def team_and_tasks(database_url):
    team, _ = teams.create_team("Cursor")
    caller = Caller(team.id, TokenKind.TEAM_API_KEY)
    project = projects.create_project(caller, "", "P", "", "")
    made = [tasks.create_task(caller, "", project.id, f"Task {n}") for n in range(2)]
    return caller, made


class Reader:
    """A WatchTasks-like reader: polls the team's events after its cursor."""

    def __init__(self, team_id: str, cursor: int) -> None:
        self.team_id, self.cursor, self.seen = team_id, cursor, []

    def poll(self) -> None:
        for event in events.events_after(self.team_id, self.cursor, 100):
            self.seen.append(event.event_id)
            self.cursor = event.event_id


def _paused_update(caller: Caller, task_id: str, inserted: threading.Event, go: threading.Event):
    """Updates a task, then holds its transaction open after its event row is inserted."""

    def hold() -> None:
        inserted.set()
        assert go.wait(10)

    with db.write_transaction():
        tasks.update_task(caller, task_id, {"title": "changed"}, "")
        db.before_commit(hold)  # runs after the event insert, which was registered first


def test_a_later_writer_waits_so_the_reader_gets_both_in_order_once(team_and_tasks, backend):
    caller, (first, second) = team_and_tasks
    reader = Reader(caller.team_id, events.last_event_id(caller.team_id))
    inserted, go = threading.Event(), threading.Event()
    slow = threading.Thread(target=_paused_update, args=(caller, first.id, inserted, go))
    slow.start()
    assert inserted.wait(10)  # the first transaction holds its event id, uncommitted

    fast = threading.Thread(target=tasks.update_task, args=(caller, second.id, {"title": "x"}, ""))
    fast.start()
    fast.join(0.5)
    reader.poll()  # between the two: neither is visible, nothing is skipped
    assert reader.seen == []
    if backend == "postgres":
        assert fast.is_alive()  # the second writer waits for the first one's commit

    go.set()
    slow.join(10)
    reader.poll()
    fast.join(10)
    reader.poll()
    reader.poll()
    rows = TaskEvent.select().where(TaskEvent.team == caller.team_id).order_by(TaskEvent.event_id)
    written = [row.event_id for row in rows][-2:]
    assert reader.seen == written  # both, in order, once each
    assert [r.task_id for r in rows][-2:] == [first.id, second.id]


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_without_the_event_lock_a_plain_sequence_would_skip(team_and_tasks):
    """Why the lock exists: ids from the sequence, committed out of order, fool a reader."""
    caller, (first, _) = team_and_tasks
    reader = Reader(caller.team_id, events.last_event_id(caller.team_id))
    row = {"team": caller.team_id, "task_id": first.id, "event": "task.updated", "created_at": 1}
    early_id, late_commit = threading.Event(), threading.Event()

    def writes_early_commits_late() -> None:
        with db.database.atomic():
            TaskEvent.insert(row).execute()
            early_id.set()
            assert late_commit.wait(10)

    slow = threading.Thread(target=writes_early_commits_late)
    slow.start()
    assert early_id.wait(10)
    with db.database.atomic():
        TaskEvent.insert(row).execute()  # a higher id, committed first
    reader.poll()
    late_commit.set()
    slow.join(10)
    reader.poll()
    all_ids = [r.event_id for r in TaskEvent.select().where(TaskEvent.team == caller.team_id)]
    assert len(reader.seen) == 1 and len(all_ids[-2:]) == 2  # one of the two was skipped
