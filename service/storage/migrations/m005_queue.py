"""Migration 5, the work queue: indexes for the claim pick, the sweeper and ListTasks'
filters; a fingerprint beside each idempotency key; the event retention watermark."""

from __future__ import annotations

import peewee as pw
from playhouse.migrate import SchemaMigrator, migrate

from ..db import database

# Written out, not built from the models: a migration keeps doing what it did when written.
_INDEXES = (
    # ClaimNextTask: the best todo task of a team, high before low, then oldest.
    "CREATE INDEX IF NOT EXISTS task_pick_next"
    " ON task (team_id, status, priority DESC, created_at, seq)",
    # The lease sweeper (every team) and a claim expiring its own team's leases first.
    "CREATE INDEX IF NOT EXISTS task_lease_due ON task (status, lease_expire_at)",
    "CREATE INDEX IF NOT EXISTS task_team_lease_due ON task (team_id, status, lease_expire_at)",
    # ListTasks filtered by one field, in its order (created_at, seq).
    "CREATE INDEX IF NOT EXISTS task_team_status_order ON task (team_id, status, created_at, seq)",
    "CREATE INDEX IF NOT EXISTS task_team_agent_order"
    " ON task (team_id, assigned_agent_id, created_at, seq)",
    "CREATE INDEX IF NOT EXISTS task_team_priority_order"
    " ON task (team_id, priority, created_at, seq)",
)


class _EventRetentionMark(pw.Model):
    """Frozen as this migration created it: one row, the highest event id retention deleted."""

    id = pw.IntegerField(primary_key=True)
    max_deleted_event_id = pw.BigIntegerField()

    class Meta:
        database = database
        table_name = "event_retention_mark"


def apply() -> None:
    for statement in _INDEXES:
        database.execute_sql(statement)
    database.create_tables([_EventRetentionMark], safe=True)
    migrate(
        SchemaMigrator.from_database(database.obj).add_column(
            "idempotency_key", "fingerprint", pw.CharField(max_length=64, default="")
        )
    )
