"""Shared token buckets (table rate_limit_bucket): one row per limited key, all processes."""

from __future__ import annotations

from .db import database, is_postgres, sql, write_transaction

_CREATE = "INSERT INTO rate_limit_bucket (bucket, tokens, refilled_at) VALUES (?, ?, ?) "
_CREATE += "ON CONFLICT (bucket) DO NOTHING"
_READ = "SELECT tokens, refilled_at FROM rate_limit_bucket WHERE bucket = ?"
_WRITE = "UPDATE rate_limit_bucket SET tokens = ?, refilled_at = ? WHERE bucket = ?"
_FORGET = "DELETE FROM rate_limit_bucket WHERE refilled_at < ?"


def take(key: str, capacity: float, per_second: float, most: int, now: float) -> tuple[int, float]:
    """Takes up to `most` whole tokens from the bucket `key` (created full).

    Returns (tokens taken, seconds until one is available when none was).
    """
    with write_transaction():
        database.execute_sql(sql(_CREATE), (key, capacity, now))
        tokens, refilled_at = database.execute_sql(
            sql(_READ + (" FOR UPDATE" if is_postgres() else "")), (key,)
        ).fetchone()
        tokens = min(capacity, tokens + max(0.0, now - refilled_at) * per_second)
        taken = min(most, int(tokens))
        database.execute_sql(sql(_WRITE), (tokens - taken, max(now, refilled_at), key))
    if taken:
        return taken, 0.0
    return 0, (1 - tokens) / per_second


def forget_before(moment: float) -> None:
    """Deletes buckets untouched since `moment` (refilled by now: same as a new one)."""
    with write_transaction():
        database.execute_sql(sql(_FORGET), (moment,))
