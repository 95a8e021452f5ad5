"""Event retention without gRPC: old events go in bounded batches, recent ones stay."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agenttasks.server.domain import projects, retention, tasks, teams
from agenttasks.server.domain.values import MICROS, Caller, TokenKind
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

    # A later cutoff takes the rest.
    later = max(t.updated_at for t in made) + MICROS
    while retention.delete_events_before(later, limit=1000):
        pass
    assert not TaskEvent.select().where(ours).exists()
