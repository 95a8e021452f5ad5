"""Migration 1: the tables as the first release created them (frozen copies of its models)."""

from __future__ import annotations

import peewee as pw

from ..db import database

# These classes are a record of the schema, not the live models: never edit them, and
# never import them elsewhere. A later change goes into a later migration.


class _Model(pw.Model):
    class Meta:
        database = database
        legacy_table_names = False


class Team(_Model):
    seq = pw.BigAutoField()
    id = pw.CharField(max_length=32, unique=True)
    name = pw.CharField(max_length=200)
    rate_limit_task_per_minute = pw.IntegerField(null=True)
    rate_limit_other_per_minute = pw.IntegerField(null=True)
    default_lease_us = pw.BigIntegerField(null=True)
    created_at = pw.BigIntegerField()
    updated_at = pw.BigIntegerField()


class Agent(_Model):
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


class ApiToken(_Model):
    seq = pw.BigAutoField()
    digest = pw.CharField(max_length=64, unique=True)
    team = pw.ForeignKeyField(Team, field=Team.id, on_delete="CASCADE")
    agent = pw.ForeignKeyField(Agent, field=Agent.id, null=True, on_delete="CASCADE")
    kind = pw.CharField(max_length=8)
    created_at = pw.BigIntegerField()
    expires_at = pw.BigIntegerField(null=True)


class Project(_Model):
    seq = pw.BigAutoField()
    id = pw.CharField(max_length=32, unique=True)
    team = pw.ForeignKeyField(Team, field=Team.id, on_delete="CASCADE")
    name = pw.CharField(max_length=200)
    description = pw.TextField(default="")
    created_at = pw.BigIntegerField()
    updated_at = pw.BigIntegerField()

    class Meta:
        indexes = ((("team", "created_at", "seq"), False),)


class Task(_Model):
    seq = pw.BigAutoField()
    id = pw.CharField(max_length=32, unique=True)
    team = pw.ForeignKeyField(Team, field=Team.id, on_delete="CASCADE")
    project = pw.ForeignKeyField(Project, field=Project.id)
    title = pw.CharField(max_length=500)
    description = pw.TextField(default="")
    status = pw.CharField(max_length=16, default="todo")
    priority = pw.SmallIntegerField(default=2)
    assigned_agent = pw.ForeignKeyField(Agent, field=Agent.id, null=True, on_delete="SET NULL")
    result = pw.TextField(null=True)
    progress = pw.TextField(default="")
    due_time = pw.BigIntegerField(null=True)
    version = pw.IntegerField(default=1)
    lease_expire_at = pw.BigIntegerField(null=True)
    lease_us = pw.BigIntegerField(null=True)
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


class TaskEvent(_Model):
    event_id = pw.BigAutoField()
    team = pw.ForeignKeyField(Team, field=Team.id, on_delete="CASCADE")
    task_id = pw.CharField(max_length=32)
    event = pw.CharField(max_length=32)
    agent_id = pw.CharField(max_length=32, null=True)
    agent_name = pw.CharField(max_length=200, null=True)
    reason = pw.CharField(max_length=64, default="")
    task_json = pw.TextField()
    created_at = pw.BigIntegerField()

    class Meta:
        indexes = ((("team", "event_id"), False),)


class IdempotencyKey(_Model):
    seq = pw.BigAutoField()
    team = pw.ForeignKeyField(Team, field=Team.id, on_delete="CASCADE")
    scope = pw.CharField(max_length=64)
    request_id = pw.CharField(max_length=200)
    resource_id = pw.CharField(max_length=32)
    created_at = pw.BigIntegerField()

    class Meta:
        indexes = ((("team", "scope", "request_id"), True),)


def apply() -> None:
    # `safe=True` as the first release ran it: tables already present are left alone.
    database.create_tables(
        [Team, Agent, ApiToken, Project, Task, TaskEvent, IdempotencyKey], safe=True
    )
