"""Task events as a contract: recorded with each change, read by WatchTasks and webhooks.

A stored event carries the columns WatchTasks filters on and `payload`, the task as clients
see it, in a versioned format. Format 1 is a JSON object with these keys, in this order:

    id, teamId, projectId, title, description, status ("todo" | "in_progress" | "done" |
    "cancelled"), priority ("low" | "normal" | "high"), assignedAgentId (string | null),
    result (string | null), progress, dueTime (RFC 3339 | null), createdAt, updatedAt,
    etag, leaseExpireTime (RFC 3339 | null), attemptCount, maxAttempts

Times are RFC 3339 in UTC with six fractional digits (`2026-11-30T05:51:40.123456Z`).
The webhook body's `data.task` is a subset of it. A later format gets a new number and a
reader for it here, so rows written before a change still read.
"""

from __future__ import annotations

import datetime
import functools
import json
from dataclasses import dataclass
from typing import Any

from ..storage import events as stored
from ..storage.models import Task
from .errors import EventsExpired
from .pagination import next_token, parse_page
from .values import Caller, could_be_id, own_team

FORMAT = 1
PRIORITY_WORDS = {1: "low", 2: "normal", 3: "high"}
PRIORITY_NUMBERS = {word: number for number, word in PRIORITY_WORDS.items()}
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)

# The keys of the webhook body's `data.task` (SPEC §6), in the order they are sent.
WEBHOOK_TASK_KEYS = (
    "id",
    "title",
    "description",
    "status",
    "priority",
    "result",
    "assignedAgentId",
    "projectId",
    "createdAt",
    "updatedAt",
)


def rfc3339(micros: int | None) -> str | None:
    """Epoch µs as RFC 3339 UTC with six fractional digits (exact: no float on the way)."""
    if micros is None:
        return None
    seconds, fraction = divmod(micros, 1_000_000)
    return f"{_whole_second(seconds)}.{fraction:06d}Z"


@functools.lru_cache(maxsize=4096)
def _whole_second(seconds: int) -> str:
    # Every event formats two or three times, mostly of the same recent seconds. (Not
    # strftime: its %Y leaves years before 1000 unpadded, which is no RFC 3339.)
    stamp = _EPOCH + datetime.timedelta(seconds=seconds)
    return stamp.replace(tzinfo=None).isoformat(timespec="seconds")


def micros_of_rfc3339(text: str | None) -> int | None:
    if text is None:
        return None
    stamp = datetime.datetime.fromisoformat(text)  # the `Z` reads as UTC; strptime is slower
    delta = stamp - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def task_view(task: Task) -> dict[str, Any]:
    """The task as clients see it, in payload format 1."""
    return {
        "id": task.id,
        "teamId": task.team_id,
        "projectId": task.project_id,
        "title": task.title,
        "description": task.description,
        "status": task.status,
        "priority": PRIORITY_WORDS[task.priority],
        "assignedAgentId": task.assigned_agent_id,
        "result": task.result,
        "progress": task.progress,
        "dueTime": rfc3339(task.due_time),
        "createdAt": rfc3339(task.created_at),
        "updatedAt": rfc3339(task.updated_at),
        "etag": str(task.version),
        "leaseExpireTime": rfc3339(task.lease_expire_at),
        "attemptCount": task.attempt_count,
        "maxAttempts": task.max_attempts,
    }


def record(task: Task, event: str, actor: Caller | None, reason: str = "") -> None:
    """Adds `event` for the task as it now stands to the current write transaction."""
    stored.queue(
        {
            "team_id": task.team_id,
            "task_id": task.id,
            "event": event,
            "reason": reason,
            "agent_id": actor.agent_id if actor is not None else None,
            "agent_name": actor.agent_name if actor is not None else None,
            "project_id": task.project_id,
            "status": task.status,
            "priority": task.priority,
            "assigned_agent_id": task.assigned_agent_id,
            "format": FORMAT,
            "payload": json.dumps(task_view(task), separators=(",", ":")),
            "created_at": task.updated_at,
        }
    )


@dataclass(frozen=True)
class Agent:
    id: str
    name: str


@dataclass(frozen=True)
class Event:
    """A recorded event, decoded: what WatchTasks sends and webhook bodies are built from."""

    event_id: int
    team_id: str
    event: str
    reason: str
    task: dict[str, Any]
    agent: Agent | None
    time: int  # µs

    @classmethod
    def of(cls, row: stored.EventRow) -> Event:
        if row.format != FORMAT:
            raise ValueError(f"event {row.event_id} has unknown payload format {row.format}")
        agent = Agent(row.agent_id, row.agent_name or "") if row.agent_id else None
        task = json.loads(row.payload)
        return cls(row.event_id, row.team_id, row.event, row.reason, task, agent, row.created_at)

    def webhook_body(self) -> dict[str, Any]:
        """The JSON body a webhook receives for this event (SPEC §6)."""
        return {
            "event": self.event,
            "timestamp": rfc3339(self.time),
            "teamId": self.team_id,
            "data": {
                "task": {key: self.task[key] for key in WEBHOOK_TASK_KEYS},
                "agent": {"id": self.agent.id, "name": self.agent.name} if self.agent else None,
            },
        }


def events_after(team_id: str, after_event_id: int, limit: int, **filters: Any) -> list[Event]:
    """The team's events after the cursor, in order, never skipping one (storage.events)."""
    return [Event.of(row) for row in stored.after(team_id, after_event_id, limit, **filters)]


def last_event_id(team_id: str) -> int:
    """The team's newest event id: every event up to it has committed (storage.events)."""
    return stored.last_event_id(team_id)


def check_resumable(team_id: str, after_event_id: int) -> None:
    """Refuses a cursor below what retention deleted: events after it may be gone.

    Ids are global across teams, so a gap in a team's ids says nothing; the retention
    mark (storage.events.note_retention) does.
    """
    mark = stored.retention_mark()
    if after_event_id >= mark:
        return
    oldest = stored.after(team_id, mark, 1)  # events at or below the mark may be going
    kept = f"the oldest event kept is {oldest[0].event_id}" if oldest else "none is kept"
    raise EventsExpired(
        f"Events after {after_event_id} are no longer kept (retention deleted events up to"
        f" {mark}; {kept}): list the tasks again, then watch from {mark} or from now"
    )


def list_events(
    caller: Caller, team_id: str, task_id: str, agent_id: str, page_size: int, page_token: str
) -> tuple[list[Event], str]:
    """The audit read: the team's retained events, oldest first, one page at a time."""
    team_id = own_team(caller, team_id)
    page = parse_page(page_size, page_token, ("events", team_id, task_id, agent_id))
    if not all(could_be_id(i) for i in (task_id, agent_id) if i):
        return [], ""  # a filter naming what cannot exist matches nothing
    after_event_id = page.after[1] if page.after else 0
    rows = stored.after(
        team_id,
        after_event_id,
        page.size + 1,
        task_id=task_id or None,
        actor_agent_id=agent_id or None,
    )
    if len(rows) <= page.size:
        return [Event.of(row) for row in rows], ""
    last = rows[page.size - 1]
    return [Event.of(row) for row in rows[: page.size]], next_token(
        page, last.created_at, last.event_id
    )
