"""`request_id` handling: a retry within 24 h returns what the first call made, nothing more."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import peewee as pw

from ..storage.db import write_transaction
from ..storage.models import IdempotencyKey
from .values import MICROS, now_us

T = TypeVar("T")
RETENTION_US = 24 * 3600 * MICROS


def remembered(team_id: str, scope: str, request_id: str) -> str | None:
    row = (
        IdempotencyKey.select(IdempotencyKey.resource_id)
        .where(
            (IdempotencyKey.team == team_id)
            & (IdempotencyKey.scope == scope)
            & (IdempotencyKey.request_id == request_id)
            & (IdempotencyKey.created_at > now_us() - RETENTION_US)
        )
        .first()
    )
    return row.resource_id if row else None


def once(
    team_id: str,
    scope: str,
    request_id: str,
    perform: Callable[[], T],
    resource_id: Callable[[T], str],
    replay: Callable[[str], T],
) -> T:
    """Runs `perform` in a write transaction, at most once per (team, scope, request_id).

    A retry gets `replay(resource_id)` of the first call's resource. Two concurrent first
    calls race on the unique key: the loser's transaction rolls back and it replays.
    """
    if not request_id:
        with write_transaction():
            return perform()
    existing = remembered(team_id, scope, request_id)
    if existing is not None:
        return replay(existing)
    try:
        with write_transaction():
            result = perform()
            key = (
                (IdempotencyKey.team == team_id)
                & (IdempotencyKey.scope == scope)
                & (IdempotencyKey.request_id == request_id)
            )
            expired = IdempotencyKey.created_at <= now_us() - RETENTION_US
            IdempotencyKey.delete().where(key & expired).execute()
            IdempotencyKey.create(
                team=team_id,
                scope=scope,
                request_id=request_id,
                resource_id=resource_id(result),
                created_at=now_us(),
            )
        return result
    except pw.IntegrityError:
        existing = remembered(team_id, scope, request_id)
        if existing is None:
            raise
        return replay(existing)
