"""The task state machine: locking a task, applying a change, and recording its events.

Every change to a task goes through `lock_task` (a row lock on PostgreSQL, the write
lock on SQLite) and `save_with_events` inside one write transaction, so a check and
the write it allows can never be separated by another writer, and each change's
events are committed with it or not at all.
"""

from __future__ import annotations

import peewee as pw

from ..storage import prepared
from ..storage.db import for_update
from ..storage.models import Agent, Task
from ..storage.prepared import Param, Statement
from .events import record as record_event
from .lookup import by_id_in_team, one_of_team
from .values import Caller, now_us

TODO, IN_PROGRESS, DONE, CANCELLED = "todo", "in_progress", "done", "cancelled"
STATUSES = (TODO, IN_PROGRESS, DONE, CANCELLED)
OPEN_STATUSES = (TODO, IN_PROGRESS)

# MoveTask's table: from -> statuses it may move to.
MOVES = {
    TODO: {IN_PROGRESS, CANCELLED},
    IN_PROGRESS: {TODO, DONE, CANCELLED},
    DONE: {TODO},
    CANCELLED: {TODO},
}

CREATED, CLAIMED, COMPLETED = "task.created", "task.claimed", "task.completed"
CANCELLED_EVENT, UPDATED, MOVED = "task.cancelled", "task.updated", "task.moved"
EVENT_NAMES = (CREATED, CLAIMED, COMPLETED, CANCELLED_EVENT, UPDATED, MOVED)


def etag_of(task: Task) -> str:
    return str(task.version)


_TASK_LOCKED = by_id_in_team(lambda: for_update(Task.select()))
_AGENT_LOCKED: Statement[Agent] = Statement(
    lambda: for_update(Agent.select().where(Agent.id == Param("id")))
)


def lock_task(team_id: str, task_id: str) -> Task:
    """The task, locked for this transaction; NOT_FOUND if it is not the team's."""
    return one_of_team(_TASK_LOCKED, team_id, task_id, "task")


def lock_agent(agent_id: str) -> Agent | None:
    """The agent's row, locked for this transaction (its latest committed version).

    Starting a task for an agent and deactivating it both take this lock before they
    look at the other's work: a claim waiting on it then sees the agent inactive, and a
    deactivation waiting on it then sees the claimed task and releases it. Without it, a
    claim committed while a deactivation ran would leave work held by an agent that can
    no longer act.
    """
    return _AGENT_LOCKED.first(id=agent_id)


def save_with_events(
    task: Task, events: list[str], actor: Caller | None, reason: str = "", *, created: bool = False
) -> Task:
    """Writes the task (new etag, new `updated_at`) and its events, in the caller's transaction."""
    now = now_us()
    task.updated_at = now
    if created:
        task.created_at = now
        prepared.save(task, force_insert=True)
    else:
        task.version += 1
        prepared.save(task)
    for event in events:
        record_event(task, event, actor, reason)
    return task


def clear_lease(task: Task) -> None:
    task.lease_expire_at = None
    task.lease_us = None


def held_by(agent_id: str) -> pw.ModelSelect[Task]:
    """The tasks the agent holds: in progress and assigned to it."""
    return Task.select().where((Task.assigned_agent == agent_id) & (Task.status == IN_PROGRESS))


def release_tasks_of_agent(agent_id: str, actor: Caller) -> None:
    """Returns an agent's in-progress tasks to todo (it was deactivated and cannot act)."""
    lock_agent(agent_id)  # first: claims still running finish before `held` is read
    for task in for_update(held_by(agent_id)):
        task.status = TODO
        task.assigned_agent = None
        clear_lease(task)
        save_with_events(task, [MOVED], actor, reason="agent_deactivated")
