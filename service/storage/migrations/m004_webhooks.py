"""Migration 4: the webhook tables, from model copies frozen as they stood when it was written."""

from __future__ import annotations

import peewee as pw

from ..db import database


class _Base(pw.Model):
    class Meta:
        database = database
        legacy_table_names = False


class _Team(_Base):
    # Only the key the foreign keys point at; the table exists (migration 1).
    id = pw.CharField(max_length=32, unique=True)

    class Meta:
        table_name = "team"


class Webhook(_Base):
    seq = pw.BigAutoField()
    id = pw.CharField(max_length=32, unique=True)
    team = pw.ForeignKeyField(_Team, field=_Team.id, on_delete="CASCADE")
    url = pw.CharField(max_length=2000)
    events = pw.TextField(default="")
    description = pw.TextField(default="")
    active = pw.BooleanField(default=True)
    disabled_reason = pw.CharField(max_length=500, default="")
    secret = pw.CharField(max_length=100)
    previous_secret = pw.CharField(max_length=100, null=True)
    previous_secret_expires_at = pw.BigIntegerField(null=True)
    after_event_id = pw.BigIntegerField(default=0)
    failing_since = pw.BigIntegerField(null=True)
    created_at = pw.BigIntegerField()
    updated_at = pw.BigIntegerField()

    class Meta:
        table_name = "webhook"
        indexes = ((("team", "created_at", "seq"), False),)


class WebhookCursor(_Base):
    team = pw.ForeignKeyField(_Team, field=_Team.id, on_delete="CASCADE", primary_key=True)
    last_event_id = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "webhook_cursor"


class WebhookDelivery(_Base):
    seq = pw.BigAutoField()
    id = pw.CharField(max_length=36, unique=True)
    webhook = pw.ForeignKeyField(Webhook, field=Webhook.id, on_delete="CASCADE")
    event = pw.CharField(max_length=32)
    event_id = pw.BigIntegerField(null=True)
    payload = pw.TextField()
    status = pw.CharField(max_length=16, default="pending")
    attempt_count = pw.IntegerField(default=0)
    next_attempt_at = pw.BigIntegerField(null=True)
    lease_until = pw.BigIntegerField(null=True)
    lease_token = pw.CharField(max_length=32, null=True)
    created_at = pw.BigIntegerField()
    updated_at = pw.BigIntegerField()

    class Meta:
        table_name = "webhook_delivery"
        indexes = (
            (("webhook", "event_id"), True),
            (("webhook", "created_at", "seq"), False),
            (("status", "next_attempt_at"), False),
        )


class WebhookAttempt(_Base):
    seq = pw.BigAutoField()
    delivery = pw.ForeignKeyField(WebhookDelivery, field=WebhookDelivery.id, on_delete="CASCADE")
    started_at = pw.BigIntegerField()
    status_code = pw.IntegerField(default=0)
    duration_us = pw.BigIntegerField(default=0)
    error = pw.CharField(max_length=500, default="")
    response_body = pw.TextField(default="")

    class Meta:
        table_name = "webhook_attempt"
        indexes = ((("delivery", "seq"), False),)


def apply() -> None:
    database.create_tables([Webhook, WebhookCursor, WebhookDelivery, WebhookAttempt], safe=True)
