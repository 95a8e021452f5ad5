"""The task state machine: locking a task, applying a change, and recording its events.

Every change to a task goes through `lock_task` (a row lock on PostgreSQL, the write
lock on SQLite) and `save_with_events` inside one write transaction, so a check and
the write it allows can never be separated by another writer, and each change's
events are committed with it or not at all.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from ..storage.db import for_update
from ..storage.models import Agent, Task, TaskEvent
from .lookup import one_of_team
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


def lock_task(team_id: str, task_id: str) -> Task:
    """The task, locked for this transaction; NOT_FOUND if it is not the team's."""
    return one_of_team(for_update(Task.select()), Task, team_id, task_id, "task")


def lock_agent(agent_id: str) -> Agent | None:
    """The agent's row, locked for this transaction (its latest committed version).

    Starting a task for an agent and deactivating it both take this lock before they
    look at the other's work: a claim waiting on it then sees the agent inactive, and a
    deactivation waiting on it then sees the claimed task and releases it. Without it, a
    claim committed while a deactivation ran would leave work held by an agent that can
    no longer act.
    """
    return for_update(Agent.select().where(Agent.id == agent_id)).first()


def snapshot(task: Task) -> str:
    return json.dumps(task.__data__, separators=(",", ":"))


def from_snapshot(data: str) -> Task:
    return Task(**json.loads(data))


def _rfc3339(micros: int | None) -> str | None:
    if micros is None:
        return None
    seconds, fraction = divmod(micros, 1_000_000)
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{fraction:06d}Z"


def event_payload(task: Task) -> str:
    """The task as an event's `payload`, format 1 (the layout migration 2 backfilled)."""
    record = {
        "id": task.id,
        "teamId": task.team_id,
        "projectId": task.project_id,
        "title": task.title,
        "description": task.description,
        "status": task.status,
        "priority": {1: "low", 2: "normal", 3: "high"}[task.priority],
        "assignedAgentId": task.assigned_agent_id,
        "result": task.result,
        "progress": task.progress,
        "dueTime": _rfc3339(task.due_time),
        "createdAt": _rfc3339(task.created_at),
        "updatedAt": _rfc3339(task.updated_at),
        "etag": etag_of(task),
        "leaseExpireTime": _rfc3339(task.lease_expire_at),
        "attemptCount": task.attempt_count,
        "maxAttempts": task.max_attempts,
    }
    return json.dumps(record, separators=(",", ":"))


def record_event(task: Task, event: str, actor: Caller | None, reason: str = "") -> None:
    agent_id = actor.agent_id if actor is not None else None
    agent_name = None
    if agent_id is not None:
        agent_name = Agent.select(Agent.name).where(Agent.id == agent_id).scalar()
    TaskEvent.create(
        team=task.team_id,
        task_id=task.id,
        event=event,
        agent_id=agent_id,
        agent_name=agent_name,
        reason=reason,
        created_at=task.updated_at,
        project_id=task.project_id,
        status=task.status,
        priority=task.priority,
        assigned_agent_id=task.assigned_agent_id,
        format=1,
        payload=event_payload(task),
    )


def save_with_events(
    task: Task, events: list[str], actor: Caller | None, reason: str = "", *, created: bool = False
) -> Task:
    """Writes the task (new etag, new `updated_at`) and its events, in the caller's transaction."""
    now = now_us()
    task.updated_at = now
    if created:
        task.created_at = now
        task.save(force_insert=True)
    else:
        task.version += 1
        task.save()
    for event in events:
        record_event(task, event, actor, reason)
    return task


def clear_lease(task: Task) -> None:
    task.lease_expire_at = None
    task.lease_us = None


def release_tasks_of_agent(agent_id: str, actor: Caller) -> None:
    """Returns an agent's in-progress tasks to todo (it was deactivated and cannot act)."""
    lock_agent(agent_id)  # first: claims still running finish before `held` is read
    held = Task.select().where((Task.assigned_agent == agent_id) & (Task.status == IN_PROGRESS))
    for task in for_update(held):
        task.status = TODO
        task.assigned_agent = None
        clear_lease(task)
        save_with_events(task, [MOVED], actor, reason="agent_deactivated")
