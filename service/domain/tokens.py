"""Issuing, retiring and resolving tokens. Only SHA-256 digests are ever stored."""

from __future__ import annotations

from dataclasses import dataclass

import peewee as pw

from ..storage import queries
from ..storage.models import ApiToken
from .values import MICROS, Caller, TokenKind, new_token, now_us, token_digest, token_kind

LAST_ACTIVE_EVERY_US = 60 * MICROS


@dataclass(frozen=True)
class Identity:
    """An authenticated token: who calls, and the team's rate-limit overrides (None: default)."""

    caller: Caller
    digest: str
    task_limit: int | None
    other_limit: int | None


def issue(team_id: str, kind: TokenKind, agent_id: str | None = None) -> str:
    """Creates a token and returns it; the caller shows it once and forgets it."""
    token = new_token(kind)
    ApiToken.create(
        digest=token_digest(token),
        team=team_id,
        agent=agent_id,
        kind=kind.value,
        created_at=now_us(),
    )
    return token


def retire(which: pw.Expression, grace_us: int = 0) -> None:
    """Stops the tokens matched by `which`: at once, or after `grace_us`."""
    now = now_us()
    live = which & (ApiToken.expires_at.is_null() | (ApiToken.expires_at > now))
    if grace_us <= 0:
        ApiToken.delete().where(live).execute()
        return
    deadline = now + grace_us
    ApiToken.update(expires_at=deadline).where(live & ApiToken.expires_at.is_null()).execute()


def team_keys(team_id: str) -> pw.Expression:
    return (ApiToken.team == team_id) & (ApiToken.kind == TokenKind.TEAM_API_KEY.value)


def agent_tokens(agent_id: str) -> pw.Expression:
    return ApiToken.agent == agent_id


def authenticate(token: str) -> Identity | None:
    """Resolves a presented token, or None when it is malformed, unknown, expired or inactive."""
    kind = token_kind(token)
    if kind is None:
        return None
    digest = token_digest(token)
    now = now_us()
    row = queries.find_token(digest, now)
    if row is None:
        return None
    (
        team_id,
        stored_kind,
        agent_id,
        agent_name,
        agent_status,
        last_active_at,
        task_limit,
        other_limit,
    ) = row
    if stored_kind != kind.value:
        return None
    if kind is TokenKind.AGENT:
        if agent_status != "active":
            return None
        if last_active_at is None or last_active_at < now - LAST_ACTIVE_EVERY_US:
            queries.touch_agent(agent_id, now, now - LAST_ACTIVE_EVERY_US)
    caller = Caller(team_id, kind, agent_id, agent_name)
    return Identity(caller, digest, task_limit, other_limit)
