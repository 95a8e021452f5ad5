"""Peewee models. Ids are opaque strings; `seq` gives insertion order; times are epoch µs."""

from __future__ import annotations

import peewee as pw

from .db import database


class BaseModel(pw.Model):
    class Meta:
        database = database
        legacy_table_names = False


class Team(BaseModel):
    seq = pw.BigAutoField()
    id = pw.CharField(max_length=32, unique=True)
    name = pw.CharField(max_length=200)
    rate_limit_task_per_minute = pw.IntegerField(null=True)
    rate_limit_other_per_minute = pw.IntegerField(null=True)
    default_lease_us = pw.BigIntegerField(null=True)
    created_at = pw.BigIntegerField()
    updated_at = pw.BigIntegerField()


class Agent(BaseModel):
    team_id: str  # the foreign key's raw value (typing only; Peewee provides it)
    task_count: int  # present when selected with a count (see the domain's queries)

    seq = pw.BigAutoField()
    id = pw.CharField(max_length=32, unique=True)
    team = pw.ForeignKeyField(Team, field=Team.id, on_delete="CASCADE")
    name = pw.CharField(max_length=200)
    description = pw.TextField(default="")
    status = pw.CharField(max_length=16, default="active")
    last_active_at = pw.BigIntegerField(null=True)
    created_at = pw.BigIntegerField()
    updated_at = pw.BigIntegerField()

    class Meta:
        indexes = ((("team", "created_at", "seq"), False),)


class ApiToken(BaseModel):
    """A Team API Key or Agent Token, stored as its SHA-256 digest only."""

    seq = pw.BigAutoField()
    digest = pw.CharField(max_length=64, unique=True)
    team = pw.ForeignKeyField(Team, field=Team.id, on_delete="CASCADE")
    agent = pw.ForeignKeyField(Agent, field=Agent.id, null=True, on_delete="CASCADE")
    kind = pw.CharField(max_length=8)  # "team" | "agent"
    created_at = pw.BigIntegerField()
    # Set when the token was rotated away with a grace period: it works until then.
    expires_at = pw.BigIntegerField(null=True)


class Project(BaseModel):
    team_id: str
    task_count: int

    seq = pw.BigAutoField()
    id = pw.CharField(max_length=32, unique=True)
    team = pw.ForeignKeyField(Team, field=Team.id, on_delete="CASCADE")
    name = pw.CharField(max_length=200)
    description = pw.TextField(default="")
    created_at = pw.BigIntegerField()
    updated_at = pw.BigIntegerField()

    class Meta:
        indexes = ((("team", "created_at", "seq"), False),)


class Task(BaseModel):
    team_id: str
    project_id: str
    assigned_agent_id: str | None

    seq = pw.BigAutoField()
    id = pw.CharField(max_length=32, unique=True)
    team = pw.ForeignKeyField(Team, field=Team.id, on_delete="CASCADE")
    # No cascade: deleting a project that still has tasks fails in the database itself.
    project = pw.ForeignKeyField(Project, field=Project.id)
    title = pw.CharField(max_length=500)
    description = pw.TextField(default="")
    status = pw.CharField(max_length=16, default="todo")
    priority = pw.SmallIntegerField(default=2)  # 1 low, 2 normal, 3 high: sortable
    assigned_agent = pw.ForeignKeyField(Agent, field=Agent.id, null=True, on_delete="SET NULL")
    result = pw.TextField(null=True)
    progress = pw.TextField(default="")
    due_time = pw.BigIntegerField(null=True)
    version = pw.IntegerField(default=1)  # the etag; bumped by every write
    lease_expire_at = pw.BigIntegerField(null=True)
    lease_us = pw.BigIntegerField(null=True)  # the lease a heartbeat renews by default
    attempt_count = pw.IntegerField(default=0)
    max_attempts = pw.IntegerField(default=0)
    created_at = pw.BigIntegerField()
    updated_at = pw.BigIntegerField()

    class Meta:
        indexes = (
            (("team", "created_at", "seq"), False),
            (("team", "status", "priority", "created_at", "seq"), False),
            (("assigned_agent", "status"), False),
            (("project", "created_at", "seq"), False),
        )


class TaskEvent(BaseModel):
    """One task event, written in the transaction of the change that caused it.

    The columns are what readers filter on; `payload` is the task as clients see it, in
    the versioned `format` that domain.events defines.
    """

    event_id = pw.BigAutoField()
    team = pw.ForeignKeyField(Team, field=Team.id, on_delete="CASCADE")
    task_id = pw.CharField(max_length=32)  # no foreign key: events outlive deleted tasks
    event = pw.CharField(max_length=32)
    agent_id = pw.CharField(max_length=32, null=True)
    agent_name = pw.CharField(max_length=200, null=True)
    reason = pw.CharField(max_length=64, default="")
    created_at = pw.BigIntegerField()
    # The task right after the change: the columns readers filter on, and the whole task
    # as `payload`, a JSON record whose layout is named by `format` (see migration 2).
    project_id = pw.CharField(max_length=32, default="", constraints=[pw.SQL("DEFAULT ''")])
    status = pw.CharField(max_length=16, default="", constraints=[pw.SQL("DEFAULT ''")])
    priority = pw.SmallIntegerField(default=0, constraints=[pw.SQL("DEFAULT 0")])
    assigned_agent_id = pw.CharField(max_length=32, null=True)
    format = pw.SmallIntegerField(default=1, constraints=[pw.SQL("DEFAULT 1")])
    payload = pw.TextField(default="{}", constraints=[pw.SQL("DEFAULT '{}'")])

    class Meta:
        # created_at: retention deletes events by age.
        indexes = ((("team", "event_id"), False), (("created_at",), False))


class IdempotencyKey(BaseModel):
    """`request_id` of a creating call, remembered for 24 h with what it created."""

    seq = pw.BigAutoField()
    team = pw.ForeignKeyField(Team, field=Team.id, on_delete="CASCADE")
    scope = pw.CharField(max_length=64)
    request_id = pw.CharField(max_length=200)
    resource_id = pw.CharField(max_length=32)
    # SHA-256 of the request's content: the same key with other content is refused.
    fingerprint = pw.CharField(max_length=64, default="")
    created_at = pw.BigIntegerField()

    class Meta:
        indexes = ((("team", "scope", "request_id"), True),)


class RateLimitBucket(BaseModel):
    """A token bucket shared by every process (storage.rate_buckets reads it with plain SQL)."""

    bucket = pw.CharField(max_length=64, primary_key=True)
    tokens = pw.DoubleField()
    refilled_at = pw.DoubleField()


class EventRetentionMark(BaseModel):
    """One row: every event id up to `max_deleted_event_id` may have been deleted.

    Created by migration 4 (not in MODELS). Ids are global across teams, so a team's own
    ids have gaps: only this mark tells a resumed cursor that retention took events.
    """

    id = pw.IntegerField(primary_key=True)
    max_deleted_event_id = pw.BigIntegerField()


class SchemaMigration(BaseModel):
    version = pw.IntegerField(primary_key=True)
    name = pw.CharField(max_length=200)
    applied_at = pw.BigIntegerField()


MODELS: list[type[BaseModel]] = [
    Team,
    Agent,
    ApiToken,
    Project,
    Task,
    TaskEvent,
    IdempotencyKey,
    RateLimitBucket,
]
