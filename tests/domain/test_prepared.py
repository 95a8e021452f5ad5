"""Statements built once (storage.prepared) read and write exactly what Peewee's own queries
do, on both backends."""

from __future__ import annotations

import peewee as pw
import pytest

from agenttasks.server.domain import projects, tasks, teams
from agenttasks.server.domain.values import Caller, TokenKind, new_id, now_us
from agenttasks.server.storage import prepared
from agenttasks.server.storage.models import Project, Task, Webhook
from agenttasks.server.storage.prepared import Param, Statement


@pytest.fixture
def made(database_url):
    team, _ = teams.create_team("Prepared")
    caller = Caller(team.id, TokenKind.TEAM_API_KEY)
    project = projects.create_project(caller, "", "P", "", "")
    task = tasks.create_task(caller, "", project.id, "first", description="d", priority=3)
    return caller, project, task


def test_a_statement_reads_the_row_peewee_reads(made):
    _, _, task = made
    by_id = Statement(lambda: Task.select().where(Task.id == Param("id")))

    row = by_id.first(id=task.id)

    assert row.__data__ == Task.get(Task.id == task.id).__data__
    assert by_id.first(id="c" + "0" * 24) is None
    assert not row.is_dirty()


def test_constants_written_into_a_statement_stay_in_place(made):
    caller, _, task = made
    open_tasks = Statement(
        lambda: Task.select(Task.id).where(
            (Task.team == Param("team")) & Task.status.in_(("todo", "in_progress"))
        )
    )

    assert [row.id for row in open_tasks.all(team=caller.team_id)] == [task.id]
    tasks.move_task(caller, task.id, "cancelled")
    assert open_tasks.all(team=caller.team_id) == []


def test_named_counts_and_aggregates_read_back(made):
    caller, project, _ = made
    count = Task.select(pw.fn.COUNT(Task.seq)).where(Task.project == Project.id).alias("n")
    with_count = Statement(
        lambda: Project.select(Project.id, count).where(Project.id == Param("id"))
    )
    newest = Statement(
        lambda: Task.select(pw.fn.MAX(Task.created_at)).where(Task.team == Param("team"))
    )

    assert with_count.first(id=project.id).n == 1
    assert newest.scalar(team=caller.team_id) == Task.get(Task.team == caller.team_id).created_at
    with pytest.raises(TypeError):
        newest.first(team=caller.team_id)  # an unnamed aggregate is no model field


def test_save_inserts_and_updates_like_peewee(made):
    caller, project, _ = made
    task = Task(
        id=new_id(),
        team=caller.team_id,
        project=project.id,
        title="saved",
        created_at=now_us(),
        updated_at=now_us(),
    )

    prepared.save(task, force_insert=True)
    assert task.seq == Task.get(Task.id == task.id).seq
    task.title, task.version = "renamed", 2
    prepared.save(task)

    stored = Task.get(Task.id == task.id)
    assert (stored.title, stored.version, stored.description) == ("renamed", 2, "")


def test_an_update_writes_only_the_fields_assigned(made):
    _, _, task = made
    read = Statement(lambda: Task.select().where(Task.id == Param("id"))).first(id=task.id)
    Task.update(description="changed meanwhile").where(Task.id == task.id).execute()

    read.version += 1
    prepared.save(read)
    prepared.save(read)  # nothing assigned since: nothing written

    stored = Task.get(Task.id == task.id)
    assert (stored.version, stored.description) == (task.version + 1, "changed meanwhile")


def test_booleans_read_as_booleans(made):
    caller, _, _ = made
    Webhook.insert(
        id="cwebhook0000000000000000x",
        team=caller.team_id,
        url="https://example.com/hook",
        events="",
        secret="whsec_x",
        active=False,
        created_at=1,
        updated_at=1,
    ).execute()
    by_id = Statement(lambda: Webhook.select().where(Webhook.id == Param("id")))

    assert by_id.first(id="cwebhook0000000000000000x").active is False
