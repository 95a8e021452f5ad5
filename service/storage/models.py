"""Peewee models. Ids are opaque strings; `seq` gives insertion order; times are epoch µs."""

from __future__ import annotations

import logging
import re

import peewee as pw

from .db import database

_SECRET = re.compile(r"whsec_[A-Za-z0-9+/=]+")


class _RedactSecrets(logging.Filter):
    """Peewee logs each statement with its parameters at DEBUG, and webhook secrets are
    stored recoverable (they sign deliveries): they are blanked before any handler sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "whsec_" in text:
            record.msg, record.args = _SECRET.sub("whsec_[redacted]", text), ()
        return True


logging.getLogger("peewee").addFilter(_RedactSecrets())


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
    # Foreign keys without an index of their own: wider indexes below lead with them.
    team = pw.ForeignKeyField(Team, field=Team.id, on_delete="CASCADE", index=False)
    # No cascade: deleting a project that still has tasks fails in the database itself.
    project = pw.ForeignKeyField(Project, field=Project.id, index=False)
    title = pw.CharField(max_length=500)
    description = pw.TextField(default="")
    status = pw.CharField(max_length=16, default="todo")
    priority = pw.SmallIntegerField(default=2)  # 1 low, 2 normal, 3 high: sortable
    assigned_agent = pw.ForeignKeyField(
        Agent, field=Agent.id, null=True, on_delete="SET NULL", index=False
    )
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
            (("project", "created_at", "seq"), False),
        )


class TaskEvent(BaseModel):
    """One task event, written in the transaction of the change that caused it.

    The columns are what readers filter on; `payload` is the task as clients see it, in
    the versioned `format` that domain.events defines.
    """

    event_id = pw.BigAutoField()
    # No index of its own: (team, event_id) below leads with it.
    team = pw.ForeignKeyField(Team, field=Team.id, on_delete="CASCADE", index=False)
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
    # No index of its own: (team, scope, request_id) below leads with it.
    team = pw.ForeignKeyField(Team, field=Team.id, on_delete="CASCADE", index=False)
    scope = pw.CharField(max_length=64)
    request_id = pw.CharField(max_length=200)
    resource_id = pw.CharField(max_length=32)
    created_at = pw.BigIntegerField()
    # SHA-256 of the request's content: the same key with other content is refused.
    fingerprint = pw.CharField(max_length=64, default="")

    class Meta:
        indexes = ((("team", "scope", "request_id"), True),)


class Webhook(BaseModel):
    """An endpoint that receives the team's task events (created by migration 4)."""

    team_id: str

    seq = pw.BigAutoField()
    id = pw.CharField(max_length=32, unique=True)
    team = pw.ForeignKeyField(Team, field=Team.id, on_delete="CASCADE")
    url = pw.CharField(max_length=2000)
    events = pw.TextField(default="")  # comma-separated event names; empty means all
    description = pw.TextField(default="")
    active = pw.BooleanField(default=True)
    disabled_reason = pw.CharField(max_length=500, default="")
    # The signing secret, recoverable because every delivery is signed with it.
    secret = pw.CharField(max_length=100)
    # The secret before the last rotation; signs beside the new one until it expires.
    previous_secret = pw.CharField(max_length=100, null=True)
    previous_secret_expires_at = pw.BigIntegerField(null=True)
    # Only events after this one go to this endpoint (the team's newest at creation).
    after_event_id = pw.BigIntegerField(default=0)
    # When the current run of failed attempts began (None while the endpoint succeeds).
    failing_since = pw.BigIntegerField(null=True)
    created_at = pw.BigIntegerField()
    updated_at = pw.BigIntegerField()

    class Meta:
        indexes = ((("team", "created_at", "seq"), False),)


class WebhookCursor(BaseModel):
    """How far the team's events have been fanned out into deliveries (one row per team)."""

    team = pw.ForeignKeyField(Team, field=Team.id, on_delete="CASCADE", primary_key=True)
    last_event_id = pw.BigIntegerField(default=0)


class WebhookDelivery(BaseModel):
    """One event for one endpoint: the outbox row the dispatcher claims and retries."""

    webhook_id: str

    seq = pw.BigAutoField()
    id = pw.CharField(max_length=36, unique=True)  # UUID v4, sent on every attempt
    webhook = pw.ForeignKeyField(Webhook, field=Webhook.id, on_delete="CASCADE")
    event = pw.CharField(max_length=32)
    event_id = pw.BigIntegerField(null=True)  # None for `ping`
    payload = pw.TextField()  # the exact body, so every attempt sends the same bytes
    status = pw.CharField(max_length=16, default="pending")
    attempt_count = pw.IntegerField(default=0)  # attempts of the current series
    next_attempt_at = pw.BigIntegerField(null=True)
    # A dispatcher holds the delivery until then; its token makes its result count.
    lease_until = pw.BigIntegerField(null=True)
    lease_token = pw.CharField(max_length=32, null=True)
    created_at = pw.BigIntegerField()
    updated_at = pw.BigIntegerField()

    class Meta:
        indexes = (
            (("webhook", "event_id"), True),
            (("webhook", "created_at", "seq"), False),
            (("status", "next_attempt_at"), False),
        )


class WebhookAttempt(BaseModel):
    """One HTTP attempt of a delivery, kept for ListWebhookDeliveries."""

    delivery_id: str

    seq = pw.BigAutoField()
    delivery = pw.ForeignKeyField(WebhookDelivery, field=WebhookDelivery.id, on_delete="CASCADE")
    started_at = pw.BigIntegerField()
    status_code = pw.IntegerField(default=0)
    duration_us = pw.BigIntegerField(default=0)
    error = pw.CharField(max_length=500, default="")
    response_body = pw.TextField(default="")  # the first 1 KB

    class Meta:
        indexes = ((("delivery", "seq"), False),)


class RateLimitBucket(BaseModel):
    """A token bucket shared by every process (storage.rate_buckets reads it with plain SQL)."""

    bucket = pw.CharField(max_length=64, primary_key=True)
    tokens = pw.DoubleField()
    refilled_at = pw.DoubleField()


class EventRetentionMark(BaseModel):
    """One row: every event id up to `max_deleted_event_id` may have been deleted.

    Created by migration 5. Ids are global across teams, so a team's own
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
    EventRetentionMark,
    Webhook,
    WebhookCursor,
    WebhookDelivery,
    WebhookAttempt,
]


# The indexes of migrations 5 and 7, named as they name them (the claim pick sorts priority
# descending). Those on the lease and the assignee hold only the rows that have one.
_HAS_LEASE = Task.lease_expire_at.is_null(False)
_HAS_ASSIGNEE = Task.assigned_agent.is_null(False)
for _name, _fields, _where in (
    (
        "task_pick_next",
        (Task.team, Task.status, Task.priority.desc(), Task.created_at, Task.seq),
        None,
    ),
    ("task_lease_due", (Task.status, Task.lease_expire_at), _HAS_LEASE),
    ("task_team_lease_due", (Task.team, Task.status, Task.lease_expire_at), _HAS_LEASE),
    ("task_assigned_agent_id_status", (Task.assigned_agent, Task.status), _HAS_ASSIGNEE),
    ("task_team_status_order", (Task.team, Task.status, Task.created_at, Task.seq), None),
    (
        "task_team_agent_order",
        (Task.team, Task.assigned_agent, Task.created_at, Task.seq),
        _HAS_ASSIGNEE,
    ),
    ("task_team_priority_order", (Task.team, Task.priority, Task.created_at, Task.seq), None),
):
    Task.add_index(Task.index(*_fields, name=_name, where=_where))
