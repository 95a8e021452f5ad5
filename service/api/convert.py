"""Conversion between protos and the domain's plain values (rows, strings, µs)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.protobuf.message import Message

from agenttasks.v1 import agents_pb2, projects_pb2, tasks_pb2, teams_pb2

from ..domain import events
from ..domain.errors import ValidationError
from ..domain.lifecycle import etag_of
from ..domain.validation import mask_error
from ..domain.values import TokenKind
from ..storage import models

# --- scalars -------------------------------------------------------------------------------


def timestamp(micros: int | None) -> timestamp_pb2.Timestamp | None:
    if micros is None:
        return None
    seconds, fraction = divmod(micros, 1_000_000)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=fraction * 1000)


# The ranges google/protobuf/timestamp.proto and duration.proto define (years 1..9999,
# ±10,000 years); protobuf's own checks raise ValueError, which must not become INTERNAL.
_TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)
_DURATION_SECONDS = 315_576_000_000


def _valid(value: timestamp_pb2.Timestamp | duration_pb2.Duration) -> bool:
    if isinstance(value, timestamp_pb2.Timestamp):
        low, high = _TIMESTAMP_SECONDS
        return low <= value.seconds <= high and 0 <= value.nanos <= 999_999_999
    same_sign = value.seconds * value.nanos >= 0
    return abs(value.seconds) <= _DURATION_SECONDS and abs(value.nanos) <= 999_999_999 and same_sign


def micros_of(message: Message, field: str) -> int | None:
    """A Timestamp or Duration field in µs, or None when it is unset.

    A value outside the range its type defines is a VALIDATION_ERROR naming `field`.
    """
    if not message.HasField(field):
        return None
    value: timestamp_pb2.Timestamp | duration_pb2.Duration = getattr(message, field)
    if not _valid(value):
        kind = "timestamp" if isinstance(value, timestamp_pb2.Timestamp) else "duration"
        raise ValidationError.field(field, f"is not a valid {kind} (out of range)")
    return value.ToMicroseconds()


def enum_value(values: dict[int, Any], field: str, number: int, *, allow_unset: bool = True) -> Any:
    if number == 0 and allow_unset:
        return None
    if number not in values:
        raise ValidationError.field(field, f"unknown value {number}")
    return values[number]


TASK_STATUSES = {
    tasks_pb2.TASK_STATUS_TODO: "todo",
    tasks_pb2.TASK_STATUS_IN_PROGRESS: "in_progress",
    tasks_pb2.TASK_STATUS_DONE: "done",
    tasks_pb2.TASK_STATUS_CANCELLED: "cancelled",
}
TASK_STATUS_NUMBERS = {name: number for number, name in TASK_STATUSES.items()}
# Priorities are stored as their proto numbers (1 low, 2 normal, 3 high).
TASK_PRIORITIES = {number: number for number in (1, 2, 3)}
AGENT_STATUSES = {
    agents_pb2.AGENT_STATUS_ACTIVE: "active",
    agents_pb2.AGENT_STATUS_INACTIVE: "inactive",
}
AGENT_STATUS_NUMBERS = {name: number for number, name in AGENT_STATUSES.items()}
TOKEN_KINDS = {
    TokenKind.TEAM_API_KEY: teams_pb2.TOKEN_KIND_TEAM_API_KEY,
    TokenKind.AGENT: teams_pb2.TOKEN_KIND_AGENT,
}


def task_status(number: int, field: str = "status", *, allow_unset: bool = True) -> str | None:
    return enum_value(TASK_STATUSES, field, number, allow_unset=allow_unset)


def task_priority(number: int, field: str = "priority") -> int | None:
    return enum_value(TASK_PRIORITIES, field, number)


def agent_status(number: int, field: str = "status") -> str | None:
    return enum_value(AGENT_STATUSES, field, number)


# --- update masks --------------------------------------------------------------------------

Reader = Callable[[Any], dict[str, Any]]


def _set_paths(message: Message, readers: dict[str, Reader], prefix: str = "") -> Iterable[str]:
    for descriptor, value in message.ListFields():
        path = prefix + descriptor.name
        nested = [p for p in readers if p.startswith(path + ".")]
        if nested and isinstance(value, Message):
            yield from _set_paths(value, readers, path + ".")
        elif path in readers:
            yield path


def changes_from(
    message: Message, mask: field_mask_pb2.FieldMask, readers: dict[str, Reader]
) -> dict[str, Any]:
    """Domain changes named by `mask`; an empty mask means every writable field that is set."""
    paths = list(mask.paths) or list(_set_paths(message, readers))
    unknown = sorted(set(paths) - set(readers))
    if unknown:
        raise mask_error(unknown, set(readers))
    changes: dict[str, Any] = {}
    for path in paths:
        changes.update(readers[path](message))
    return changes


# --- resources -----------------------------------------------------------------------------


def team(row: models.Team) -> teams_pb2.Team:
    settings = teams_pb2.TeamSettings(
        rate_limit_task_per_minute=row.rate_limit_task_per_minute,
        rate_limit_other_per_minute=row.rate_limit_other_per_minute,
    )
    if row.default_lease_us:
        settings.default_lease_duration.FromMicroseconds(row.default_lease_us)
    return teams_pb2.Team(
        id=row.id,
        name=row.name,
        settings=settings,
        created_at=timestamp(row.created_at),
        updated_at=timestamp(row.updated_at),
    )


def project(row: models.Project) -> projects_pb2.Project:
    return projects_pb2.Project(
        id=row.id,
        team_id=row.team_id,
        name=row.name,
        description=row.description,
        task_count=getattr(row, "task_count", 0) or 0,
        created_at=timestamp(row.created_at),
        updated_at=timestamp(row.updated_at),
    )


def agent(row: models.Agent) -> agents_pb2.Agent:
    return agents_pb2.Agent(
        id=row.id,
        team_id=row.team_id,
        name=row.name,
        description=row.description,
        status=AGENT_STATUS_NUMBERS[row.status],
        task_count=getattr(row, "task_count", 0) or 0,
        last_active_at=timestamp(row.last_active_at),
        created_at=timestamp(row.created_at),
        updated_at=timestamp(row.updated_at),
    )


def task(row: models.Task) -> tasks_pb2.Task:
    # From the row's values directly: a page of ListTasks converts fifty rows, and each
    # field read through the model's accessors cost as much again as the message itself.
    # (Foreign keys hold the id under the field's own name.)
    values = row.__data__
    return tasks_pb2.Task(
        id=values["id"],
        team_id=values["team"],
        project_id=values["project"],
        title=values["title"],
        description=values["description"],
        status=TASK_STATUS_NUMBERS[values["status"]],
        priority=values["priority"],
        assigned_agent_id=values.get("assigned_agent") or "",
        result=values.get("result") or "",
        due_time=timestamp(values.get("due_time")),
        created_at=timestamp(values["created_at"]),
        updated_at=timestamp(values["updated_at"]),
        etag=etag_of(row),
        lease_expire_time=timestamp(values.get("lease_expire_at")),
        attempt_count=values["attempt_count"],
        max_attempts=values["max_attempts"],
        progress=values["progress"],
    )


def task_from_view(view: dict[str, Any]) -> tasks_pb2.Task:
    """A Task message from an event's payload (domain.events format 1)."""
    return tasks_pb2.Task(
        id=view["id"],
        team_id=view["teamId"],
        project_id=view["projectId"],
        title=view["title"],
        description=view["description"],
        status=TASK_STATUS_NUMBERS[view["status"]],
        priority=events.PRIORITY_NUMBERS[view["priority"]],
        assigned_agent_id=view["assignedAgentId"] or "",
        result=view["result"] or "",
        due_time=timestamp(events.micros_of_rfc3339(view["dueTime"])),
        created_at=timestamp(events.micros_of_rfc3339(view["createdAt"])),
        updated_at=timestamp(events.micros_of_rfc3339(view["updatedAt"])),
        etag=view["etag"],
        lease_expire_time=timestamp(events.micros_of_rfc3339(view["leaseExpireTime"])),
        attempt_count=view["attemptCount"],
        max_attempts=view["maxAttempts"],
        progress=view["progress"],
    )


def _event_fields(event: events.Event) -> dict[str, Any]:
    agent = tasks_pb2.ActingAgent(id=event.agent.id, name=event.agent.name) if event.agent else None
    return {
        "event_id": event.event_id,
        "event": event.event,
        "task": task_from_view(event.task),
        "agent": agent,
        "time": timestamp(event.time),
        "reason": event.reason,
    }


class _Recent:
    """The messages of the most recent events, by team and event id (an event never
    changes; the team tells apart the databases of tests that use several)."""

    def __init__(self, kept: int) -> None:
        self._kept = kept
        self._messages: OrderedDict[tuple[str, int], tasks_pb2.WatchTasksResponse] = OrderedDict()
        self._lock = threading.Lock()  # the loops of several servers in one process

    def get(self, event: events.Event) -> tasks_pb2.WatchTasksResponse:
        key = (event.team_id, event.event_id)
        with self._lock:
            message = self._messages.get(key)
        if message is None:
            message = tasks_pb2.WatchTasksResponse(**_event_fields(event))
            with self._lock:
                self._messages[key] = message
                if len(self._messages) > self._kept:
                    self._messages.popitem(last=False)
        return message


# Every stream watching a team sends the same message for an event: built once for all.
_WATCHED = _Recent(kept=1000)


def watch_event(event: events.Event) -> tasks_pb2.WatchTasksResponse:
    return _WATCHED.get(event)


def task_event(event: events.Event) -> tasks_pb2.TaskEvent:
    return tasks_pb2.TaskEvent(**_event_fields(event))
