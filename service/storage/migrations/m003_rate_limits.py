"""Migration 3: the shared token-bucket table that rate limits across processes read."""

from __future__ import annotations

import peewee as pw

from ..db import database


class _RateLimitBucket(pw.Model):
    """Frozen as this migration created it; storage.rate_buckets reads it with plain SQL."""

    bucket = pw.CharField(max_length=64, primary_key=True)
    tokens = pw.DoubleField()
    refilled_at = pw.DoubleField()

    class Meta:
        database = database
        table_name = "rate_limit_bucket"


def apply() -> None:
    database.create_tables([_RateLimitBucket], safe=True)
