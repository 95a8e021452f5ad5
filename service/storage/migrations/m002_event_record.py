"""Migration 2: a task event holds a versioned record of the task, not a dump of ORM fields.

`task_json` (the old Task model's `__data__`) becomes `payload` in format 1, plus the
columns a reader filters on (project, status, priority, assignee). Existing rows are
converted here with a converter frozen in this module: the live one may change formats.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import peewee as pw
from playhouse import migrate as schema

from ..db import database, is_postgres, sql

FORMAT = 1
_PRIORITIES = {1: "low", 2: "normal", 3: "high"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BATCH = 500

# The new columns, NOT NULL ones with a database default so existing rows are valid at once.
_COLUMNS = {
    "project_id": pw.CharField(max_length=32, constraints=[pw.SQL("DEFAULT ''")]),
    "status": pw.CharField(max_length=16, constraints=[pw.SQL("DEFAULT ''")]),
    "priority": pw.SmallIntegerField(constraints=[pw.SQL("DEFAULT 0")]),
    "assigned_agent_id": pw.CharField(max_length=32, null=True),
    "format": pw.SmallIntegerField(constraints=[pw.SQL("DEFAULT 1")]),
    "payload": pw.TextField(constraints=[pw.SQL("DEFAULT '{}'")]),
}


def rfc3339(micros: int | None) -> str | None:
    """UTC with exactly six fractional digits and a Z, computed in integers (no float)."""
    if micros is None:
        return None
    seconds, fraction = divmod(micros, 1_000_000)
    moment = _EPOCH + timedelta(seconds=seconds)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{fraction:06d}Z"


def payload(dump: dict) -> str:
    """Format 1 of an event's task, from the old `task_json` dump of the Task model."""
    # Fields the old model left at their defaults may be missing from its `__data__`.
    record = {
        "id": dump["id"],
        "teamId": dump["team"],
        "projectId": dump["project"],
        "title": dump.get("title", ""),
        "description": dump.get("description", ""),
        "status": dump.get("status", "todo"),
        "priority": _PRIORITIES[dump.get("priority", 2)],
        "assignedAgentId": dump.get("assigned_agent"),
        "result": dump.get("result"),
        "progress": dump.get("progress", ""),
        "dueTime": rfc3339(dump.get("due_time")),
        "createdAt": rfc3339(dump["created_at"]),
        "updatedAt": rfc3339(dump["updated_at"]),
        "etag": str(dump.get("version", 1)),
        "leaseExpireTime": rfc3339(dump.get("lease_expire_at")),
        "attemptCount": dump.get("attempt_count", 0),
        "maxAttempts": dump.get("max_attempts", 0),
    }
    return json.dumps(record, separators=(",", ":"))


def _backfill() -> None:
    # Batches by key, so neither backend holds the whole table in memory and no cursor
    # stays open over rows being updated.
    last = 0
    while True:
        select = "SELECT event_id, task_json FROM task_event WHERE event_id > ? "
        rows = database.execute_sql(
            sql(select + "ORDER BY event_id LIMIT ?"), (last, _BATCH)
        ).fetchall()
        for event_id, task_json in rows:
            dump = json.loads(task_json)
            database.execute_sql(
                sql(
                    "UPDATE task_event SET project_id = ?, status = ?, priority = ?, "
                    "assigned_agent_id = ?, format = ?, payload = ? WHERE event_id = ?"
                ),
                (
                    dump["project"],
                    dump.get("status", "todo"),
                    dump.get("priority", 2),
                    dump.get("assigned_agent"),
                    FORMAT,
                    payload(dump),
                    event_id,
                ),
            )
        if len(rows) < _BATCH:
            return
        last = rows[-1][0]


def apply() -> None:
    backend = database.obj
    migrator = (
        schema.PostgresqlMigrator(backend) if is_postgres() else schema.SqliteMigrator(backend)
    )
    schema.migrate(
        *(
            migrator.add_column("task_event", name, field, allow_not_null=True)
            for name, field in _COLUMNS.items()
        )
    )
    _backfill()
    schema.migrate(
        migrator.drop_column("task_event", "task_json"),
        migrator.add_index("task_event", ("created_at",), False),
    )
