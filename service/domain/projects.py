"""Projects: group a team's tasks. Deleting one with tasks needs `force`."""

from __future__ import annotations

from typing import Any

import peewee as pw

from ..storage.db import for_update, write_transaction
from ..storage.models import Project, Task
from . import idempotency
from .errors import ProjectNotEmpty
from .lookup import by_id_in_team, one_of_team
from .pagination import paginate, parse_page
from .validation import Checks, unknown_fields
from .values import Caller, new_id, now_us, own_team

WRITABLE = {"name", "description"}


def _with_task_count() -> pw.ModelSelect[Project]:
    task_count = (
        Task.select(pw.fn.COUNT(Task.seq)).where(Task.project == Project.id).alias("task_count")
    )
    return Project.select(Project, task_count)


_PROJECT = by_id_in_team(_with_task_count)
# Taken before a project's tasks change (CreateTask) or it goes (DeleteProject).
PROJECT_LOCK = by_id_in_team(lambda: for_update(Project.select(Project.id)))


def _load(team_id: str, project_id: str) -> Project:
    return one_of_team(_PROJECT, team_id, project_id, "project")


def list_projects(
    caller: Caller, team_id: str, page_size: int, page_token: str
) -> tuple[list[Project], str]:
    team_id = own_team(caller, team_id)
    page = parse_page(page_size, page_token, ("projects", team_id))
    return paginate(_with_task_count().where(Project.team == team_id), Project, page)


def get_project(caller: Caller, project_id: str) -> Project:
    checks = Checks()
    checks.required("project_id", project_id)
    checks.done()
    return _load(caller.team_id, project_id)


def create_project(
    caller: Caller, team_id: str, name: str, description: str, request_id: str
) -> Project:
    team_id = own_team(caller, team_id)
    checks = Checks()
    name = checks.name("name", name)
    description = checks.text("description", description)
    request_id = checks.request_id(request_id)
    checks.done()

    def insert() -> Project:
        now = now_us()
        project = Project.create(
            id=new_id(),
            team=team_id,
            name=name,
            description=description,
            created_at=now,
            updated_at=now,
        )
        project.task_count = 0
        return project

    return idempotency.once(
        team_id,
        "CreateProject",
        request_id,
        insert,
        lambda project: project.id,
        lambda project_id: _load(team_id, project_id),
        idempotency.fingerprint(name=name, description=description),
    )


def update_project(caller: Caller, project_id: str, changes: dict[str, Any]) -> Project:
    unknown_fields(changes, WRITABLE)
    checks = Checks()
    checks.required("project.id", project_id)
    if "name" in changes:
        changes["name"] = checks.name("project.name", changes["name"])
    if "description" in changes:
        checks.text("project.description", changes["description"])
    checks.done()
    with write_transaction():
        project = _load(caller.team_id, project_id)
        if changes:
            changes["updated_at"] = now_us()
            Project.update(changes).where(Project.id == project.id).execute()
    return _load(caller.team_id, project_id)


def delete_project(caller: Caller, project_id: str, force: bool) -> None:
    checks = Checks()
    checks.required("project_id", project_id)
    checks.done()
    try:
        with write_transaction():
            # Locked first, as CreateTask locks it: a create waiting on this lock then
            # finds no project (NOT_FOUND), and tasks created earlier are counted here.
            one_of_team(PROJECT_LOCK, caller.team_id, project_id, "project")
            project = _load(caller.team_id, project_id)
            if project.task_count and not force:
                raise ProjectNotEmpty()
            if force:
                Task.delete().where(Task.project == project.id).execute()
            Project.delete().where(Project.id == project.id).execute()
    except pw.IntegrityError:
        # A task was added to the project while it was being deleted (the foreign key
        # refused the delete): the project is not empty after all.
        raise ProjectNotEmpty() from None
