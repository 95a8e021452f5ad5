"""The task event table: written last in the transaction of its change, read by cursor.

A gap-free cursor. PostgreSQL hands out sequence values in one order and commits
transactions in another, so a reader resuming "after event 41" could skip event 40 if 40
committed after 41 was read. Here every transaction inserts its events as its very last
work, holding a per-team advisory lock from the insert until its commit: within a team,
event ids are therefore allocated in commit order, and "every event of team T with an id
above C" never misses one that commits later. (SQLite has one writer at a time, so its
ids are in commit order anyway.) Readers are per team: WatchTasks streams one team, and
webhook fan-out keeps one cursor per team.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from peewee import fn

from . import prepared
from .db import after_commit, before_commit, database, is_postgres, transaction_state
from .models import EventRetentionMark, TaskEvent
from .prepared import Param

# Advisory lock class of the per-team event lock (the second key is the team's hash).
_EVENTS_LOCK_CLASS = 7451002

# Called after each commit that wrote events, with the ids of the teams they belong to.
listeners: list[Callable[[set[str]], None]] = []


@dataclass(frozen=True)
class EventRow:
    """One stored event, as readers get it (see domain.events for the payload contract)."""

    event_id: int
    team_id: str
    task_id: str
    event: str
    reason: str
    agent_id: str | None
    agent_name: str | None
    project_id: str
    status: str
    priority: int
    assigned_agent_id: str | None
    format: int
    payload: str
    created_at: int


_COLUMNS = (
    "event_id",
    "team_id",
    "task_id",
    "event",
    "reason",
    "agent_id",
    "agent_name",
    "project_id",
    "status",
    "priority",
    "assigned_agent_id",
    "format",
    "payload",
    "created_at",
)


def queue(values: dict) -> None:
    """Adds an event row (every column but event_id) to the current write transaction."""
    state = transaction_state()
    rows = state.get("events")
    if rows is None:
        rows = state["events"] = []
        before_commit(lambda: _insert(rows))
        after_commit(lambda: _notify({row["team"] for row in rows}))
    rows.append({"team": values.pop("team_id"), **values})


def _insert(rows: list[dict]) -> None:
    if is_postgres():
        for team_id in sorted({row["team"] for row in rows}):  # sorted: no lock-order deadlock
            database.execute_sql(
                "SELECT pg_advisory_xact_lock(%s, %s)", (_EVENTS_LOCK_CLASS, _team_key(team_id))
            )
    for row in rows:
        prepared.insert(TaskEvent, row)


def _team_key(team_id: str) -> int:
    return zlib.crc32(team_id.encode()) - 2**31  # a stable int4


def _notify(team_ids: set[str]) -> None:
    for listener in listeners:
        listener(team_ids)


# The filters `after` takes, by name, and the column each one compares.
_FILTERS = {
    "project_id": TaskEvent.project_id,
    "status": TaskEvent.status,
    "assigned_agent_id": TaskEvent.assigned_agent_id,
    "priority": TaskEvent.priority,
    "task_id": TaskEvent.task_id,
    "actor_agent_id": TaskEvent.agent_id,
}


@cache
def _after(filters: tuple[str, ...]) -> prepared.Statement[TaskEvent]:
    """The `after` statement for one combination of filters, built once."""

    def build() -> Any:
        columns = [TaskEvent._meta.columns[name] for name in _COLUMNS]  # type: ignore[attr-defined]
        query = TaskEvent.select(*columns).where(
            (TaskEvent.team == Param("team")) & (TaskEvent.event_id > Param("after"))
        )
        for name in filters:
            query = query.where(_FILTERS[name] == Param(name))
        return query.order_by(TaskEvent.event_id).limit(Param("limit"))

    return prepared.Statement(build)


def after(
    team_id: str,
    after_event_id: int,
    limit: int,
    *,
    project_id: str | None = None,
    status: str | None = None,
    assigned_agent_id: str | None = None,
    priority: int | None = None,
    task_id: str | None = None,
    actor_agent_id: str | None = None,
) -> list[EventRow]:
    """The team's events with ids above `after_event_id`, oldest first, never skipping one."""
    asked = {
        "project_id": project_id,
        "status": status,
        "assigned_agent_id": assigned_agent_id,
        "priority": priority,
        "task_id": task_id,
        "actor_agent_id": actor_agent_id,
    }
    given = {name: value for name, value in asked.items() if value is not None}
    statement = _after(tuple(given))
    rows = statement.execute(team=team_id, after=after_event_id, limit=limit, **given)
    return [EventRow(*row) for row in rows.fetchall()]


def _first_event_id(order: Any) -> prepared.Statement[TaskEvent]:
    """The team's first event id in `order` (of event_id)."""
    return prepared.Statement(
        lambda: (
            TaskEvent.select(TaskEvent.event_id)
            .where(TaskEvent.team == Param("team"))
            .order_by(order)
            .limit(1)
        )
    )


_NEWEST = _first_event_id(TaskEvent.event_id.desc())
_OLDEST = _first_event_id(TaskEvent.event_id)


def last_event_id(team_id: str) -> int:
    """The newest event id of the team (0 when it has none)."""
    return _NEWEST.scalar(team=team_id) or 0


def oldest_event_id(team_id: str) -> int | None:
    """The oldest event id the team still has (retention deletes older ones)."""
    return _OLDEST.scalar(team=team_id)


def newest_of_teams(team_ids: Iterable[str]) -> dict[str, int]:
    """Each named team's newest event id (an index probe per team; none: left out)."""
    query = (
        TaskEvent.select(TaskEvent.team, fn.MAX(TaskEvent.event_id))
        .where(TaskEvent.team.in_(list(team_ids)))
        .group_by(TaskEvent.team)
    )
    return {team_id: newest for team_id, newest in query.tuples().iterator()}


def note_retention(max_deleted_event_id: int) -> None:
    """Records that events up to this id may be gone; retention calls it as it deletes.

    Call it in the deleting transaction. The mark only ever rises.
    """
    mark = EventRetentionMark.max_deleted_event_id
    (
        EventRetentionMark.insert(id=1, max_deleted_event_id=max_deleted_event_id)
        .on_conflict(
            conflict_target=[EventRetentionMark.id],
            update={
                mark: fn.MAX(mark, max_deleted_event_id)
                if not is_postgres()
                else fn.GREATEST(mark, max_deleted_event_id)
            },
        )
        .execute()
    )


_RETENTION_MARK: prepared.Statement[EventRetentionMark] = prepared.Statement(
    lambda: EventRetentionMark.select(EventRetentionMark.max_deleted_event_id).where(
        EventRetentionMark.id == 1
    )
)


def retention_mark() -> int:
    """The highest event id retention may have deleted (0: none deleted yet)."""
    return _RETENTION_MARK.scalar() or 0
