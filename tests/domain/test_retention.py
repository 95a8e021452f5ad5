"""Event retention without gRPC: old events go in bounded batches, recent ones stay."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agenttasks.server.domain import events, projects, retention, tasks, teams
from agenttasks.server.domain.values import MICROS, Caller, TokenKind, now_us
from agenttasks.server.storage.models import TaskEvent

from ..fresh import fresh_database


@pytest.fixture
def alone(backend, tmp_path) -> Iterator[str]:
    """A database of its own: retention deletes the oldest events of the whole database."""
    with fresh_database(backend, tmp_path) as url:
        yield url


def test_events_older_than_the_cutoff_are_deleted_in_batches(alone):
    team, _ = teams.create_team("Retention")
    caller = Caller(team.id, TokenKind.TEAM_API_KEY)
    project = projects.create_project(caller, "", "Old", "", "")
    made = [tasks.create_task(caller, "", project.id, f"task {n}") for n in range(5)]
    ids = [t.id for t in made]
    ours = TaskEvent.task_id.in_(ids)
    old, recent = ids[:3], ids[3:]
    # Back-date the first three tasks' events (the oldest ids) by decades.
    TaskEvent.update(created_at=1).where(TaskEvent.task_id.in_(old)).execute()
    cutoff = 2

    assert retention.delete_events_before(cutoff, limit=2) == 2
    assert retention.delete_events_before(cutoff, limit=2) == 1
    assert retention.delete_events_before(cutoff, limit=2) == 0
    assert {row.task_id for row in TaskEvent.select().where(ours)} == set(recent)

    # A later cutoff takes the rest, but for the newest event of the database.
    later = max(t.updated_at for t in made) + MICROS
    while retention.delete_events_before(later, limit=1000):
        pass
    assert [row.task_id for row in TaskEvent.select().where(ours)] == ids[-1:]


def test_event_ids_never_go_back_when_every_event_is_old(alone):
    # On SQLite a new row is numbered one above the largest id in the table: with every
    # event deleted, ids would start again at 1, under every cursor already handed out.
    team, _ = teams.create_team("Idle")
    caller = Caller(team.id, TokenKind.TEAM_API_KEY)
    project = projects.create_project(caller, "", "P", "", "")
    for n in range(3):
        tasks.create_task(caller, "", project.id, f"task {n}")
    cursor = events.last_event_id(team.id)

    while retention.delete_events_before(now_us() + MICROS):
        pass
    tasks.create_task(caller, "", project.id, "after a quiet week")

    assert [e.event_id > cursor for e in events.events_after(team.id, cursor, 10)] == [True]
