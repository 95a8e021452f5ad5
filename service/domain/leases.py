"""Expired leases: a task whose holder stopped heartbeating goes back to todo (or is cancelled)."""

from __future__ import annotations

from typing import Any

import peewee as pw

from ..storage.db import skip_locked, write_transaction
from ..storage.models import Task
from ..storage.prepared import Param, Statement
from .lifecycle import (
    CANCELLED,
    CANCELLED_EVENT,
    IN_PROGRESS,
    MOVED,
    TODO,
    clear_lease,
    save_with_events,
)

LEASE_EXPIRED = "lease_expired"
MAX_ATTEMPTS_EXCEEDED = "max_attempts_exceeded"


def is_due(task: Task, now_us: int) -> bool:
    """Whether the task's lease has run out at `now_us` (a task without a lease never is)."""
    return (
        task.status == IN_PROGRESS
        and task.lease_expire_at is not None
        and task.lease_expire_at <= now_us
    )


def lapse(task: Task) -> tuple[list[str], str]:
    """Changes a due task (in memory) into what its expiry makes it; returns events, reason.

    Reads use it to show a lease that ran out before the sweeper wrote it (GetTask and
    ListTasks see exactly the row the sweeper will write, bar `updated_at`).
    """
    task.assigned_agent = None
    clear_lease(task)
    task.attempt_count += 1
    if task.max_attempts > 0 and task.attempt_count >= task.max_attempts:
        task.status = CANCELLED
        return [MOVED, CANCELLED_EVENT], MAX_ATTEMPTS_EXCEEDED
    task.status = TODO
    return [MOVED], LEASE_EXPIRED


def expire(task: Task) -> Task:
    """Ends the lease of a locked, due task: back to todo, or cancelled past max_attempts.

    Call inside a write transaction, after `is_due` said yes on the locked row.
    """
    events, reason = lapse(task)
    return save_with_events(task, events, None, reason)


def lapsed(now_us: Any):
    """SQL condition: the row's lease has run out at `now_us` (it reads as expired)."""
    return (Task.status == IN_PROGRESS) & (Task.lease_expire_at <= now_us)


def live(now_us: Any):
    """SQL condition: the row has no lease, or one still running at `now_us`."""
    return Task.lease_expire_at.is_null() | (Task.lease_expire_at > now_us)


def cancels():
    """SQL condition: one more expired lease would pass the row's max_attempts."""
    return (Task.max_attempts > 0) & (Task.attempt_count + 1 >= Task.max_attempts)


def due_query(now_us: Any, team_id: Any = None) -> pw.ModelSelect[Task]:
    """The tasks whose leases ran out at `now_us` (of one team, if named), first due first."""
    due = Task.select().where(lapsed(now_us))
    if team_id is not None:
        due = due.where(Task.team == team_id)
    return due.order_by(Task.lease_expire_at)


DUE: Statement[Task] = Statement(lambda: skip_locked(due_query(Param("now")).limit(Param("limit"))))
DUE_OF_TEAM: Statement[Task] = Statement(
    lambda: skip_locked(due_query(Param("now"), Param("team")).limit(Param("limit")))
)


def expire_due_leases(now_us: int, limit: int = 100, team_id: str | None = None) -> int:
    """Expires up to `limit` leases that ran out at `now_us` (of one team, if named).

    The rows are claimed (skip-locked on PostgreSQL), so sweepers in any number of
    processes each take different tasks, and each condition is checked again on the
    locked row: a task completed or heartbeated meanwhile is left alone. Joins the
    caller's write transaction when there is one (ClaimNextTask ends its team's first).
    """
    due = DUE_OF_TEAM if team_id is not None else DUE
    expired = 0
    with write_transaction():
        for task in due.all(now=now_us, team=team_id, limit=limit):
            if is_due(task, now_us):
                expire(task)
                expired += 1
    return expired
