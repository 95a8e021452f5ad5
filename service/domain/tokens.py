"""Issuing, retiring and resolving tokens. Only SHA-256 digests are ever stored."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import peewee as pw

from ..storage import queries
from ..storage.db import after_commit, in_write_transaction, write_transaction
from ..storage.models import ApiToken
from .values import MICROS, Caller, TokenKind, new_token, now_us, token_digest, token_kind

LAST_ACTIVE_EVERY_US = 60 * MICROS
# How long this process trusts a token it has resolved. A token retired in this process
# stops at once (see `forget_resolved`); one retired in another process within this bound.
CACHE_US = 1 * MICROS
CACHE_MAX = 10_000  # live tokens remembered at once; past it the cache starts over


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
    forget_resolved()
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


@dataclass
class _Resolved:
    identity: Identity
    agent_id: str | None
    last_active_at: int | None
    good_until: int


class _Cache:
    """digest -> resolved token, for at most CACHE_US; never holds a refused token."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Resolved] = {}
        self.generation = 0

    def get(self, digest: str, now: int) -> _Resolved | None:
        entry = self._entries.get(digest)
        return entry if entry is not None and now < entry.good_until else None

    def put(self, digest: str, entry: _Resolved, generation: int) -> None:
        with self._lock:
            # A retirement since the row was read makes the row stale: keep it out.
            if generation == self.generation:
                if len(self._entries) >= CACHE_MAX:
                    self._entries.clear()
                self._entries[digest] = entry

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()


_cache = _Cache()


def forget_resolved() -> None:
    """Drops every token this process has resolved: the next call of each reads the database.

    Called by whatever changes what a token resolves to (retired tokens, a team's limits, an
    agent's name or status). Inside a write transaction it clears again once committed: a
    call resolved meanwhile read the rows from before.
    """
    _cache.clear()
    if in_write_transaction():
        after_commit(_cache.clear)


def authenticate(token: str) -> Identity | None:
    """Resolves a presented token, or None when it is malformed, unknown, expired or inactive.

    A token resolved in the last CACHE_US is answered from memory, so most calls cost no
    database round trip; `last_active_at` is still written at most once a minute.
    """
    kind = token_kind(token)
    if kind is None:
        return None
    digest = token_digest(token)
    now = now_us()
    entry = _cache.get(digest, now) or _resolve(digest, kind, now)
    if entry is None:
        return None
    if entry.agent_id is not None and (
        entry.last_active_at is None or entry.last_active_at < now - LAST_ACTIVE_EVERY_US
    ):
        with write_transaction():
            queries.touch_agent(entry.agent_id, now, now - LAST_ACTIVE_EVERY_US)
        entry.last_active_at = now
    return entry.identity


def _resolve(digest: str, kind: TokenKind, now: int) -> _Resolved | None:
    generation = _cache.generation
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
        expires_at,
    ) = row
    if stored_kind != kind.value:
        return None
    if kind is TokenKind.AGENT and agent_status != "active":
        return None
    caller = Caller(team_id, kind, agent_id, agent_name)
    good_until = now + CACHE_US if expires_at is None else min(now + CACHE_US, expires_at)
    entry = _Resolved(
        Identity(caller, digest, task_limit, other_limit),
        agent_id if kind is TokenKind.AGENT else None,
        last_active_at,
        good_until,
    )
    _cache.put(digest, entry, generation)
    return entry
