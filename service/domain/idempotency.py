"""`request_id` handling: a retry within 24 h returns what the first call made, nothing more.

A key is stored with a fingerprint of the request's content: reusing it for a different
request is a client bug, refused as VALIDATION_ERROR rather than answered with the
first call's resource.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any, TypeVar

import peewee as pw

from ..storage import prepared
from ..storage.db import write_transaction
from ..storage.models import IdempotencyKey
from ..storage.prepared import Param, Statement
from .errors import ValidationError
from .values import MICROS, now_us

T = TypeVar("T")
RETENTION_US = 24 * 3600 * MICROS


def fingerprint(**content: Any) -> str:
    """A digest of a request's content (plain JSON-able values), independent of key order."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _of_key(query: Any) -> Any:
    return query.where(
        (IdempotencyKey.team == Param("team"))
        & (IdempotencyKey.scope == Param("scope"))
        & (IdempotencyKey.request_id == Param("request_id"))
    )


# Agents complete tasks with a request_id in their loop: these run on every such call.
_ALIVE: Statement[IdempotencyKey] = Statement(
    lambda: _of_key(
        IdempotencyKey.select(IdempotencyKey.resource_id, IdempotencyKey.fingerprint)
    ).where(IdempotencyKey.created_at > Param("born_after"))
)
_EXPIRED: Statement[IdempotencyKey] = Statement(
    lambda: _of_key(IdempotencyKey.delete()).where(
        IdempotencyKey.created_at <= Param("born_before")
    )
)


def remembered(team_id: str, scope: str, request_id: str, digest: str = "") -> str | None:
    """The resource the key's first call made, if the key is alive; VALIDATION_ERROR if the
    key was used with other content (`digest` empty: not checked)."""
    key = {"team": team_id, "scope": scope, "request_id": request_id}
    row = _ALIVE.first(**key, born_after=now_us() - RETENTION_US)
    if row is None:
        return None
    if digest and row.fingerprint and row.fingerprint != digest:
        raise ValidationError.field(
            "request_id", "was already used for a different request; use a new request_id"
        )
    return row.resource_id


def once(
    team_id: str,
    scope: str,
    request_id: str,
    perform: Callable[[], T],
    resource_id: Callable[[T], str],
    replay: Callable[[str], T],
    digest: str = "",
) -> T:
    """Runs `perform` in a write transaction, at most once per (team, scope, request_id).

    A retry gets `replay(resource_id)` of the first call's resource. Two concurrent first
    calls race on the unique key: the loser's transaction rolls back and it replays.
    `digest` (see `fingerprint`) tells a retry from a reuse of the key for another request.
    """
    if not request_id:
        with write_transaction():
            return perform()
    existing = remembered(team_id, scope, request_id, digest)
    if existing is not None:
        return replay(existing)
    try:
        with write_transaction():
            result = perform()
            key = {"team": team_id, "scope": scope, "request_id": request_id}
            _EXPIRED.execute(**key, born_before=now_us() - RETENTION_US)
            prepared.insert(
                IdempotencyKey,
                {
                    **key,
                    "resource_id": resource_id(result),
                    "fingerprint": digest,
                    "created_at": now_us(),
                },
            )
        return result
    except pw.IntegrityError:
        existing = remembered(team_id, scope, request_id, digest)
        if existing is None:
            raise
        return replay(existing)
