"""Hand-written statements for the hottest paths, where the query builder's cost shows.

Each is a fixed SQL string run through `execute_sql` (microseconds) instead of a built
query (a couple of hundred microseconds); every call of the API authenticates.
"""

from __future__ import annotations

from functools import cache

from .db import database, sql

_FIND_TOKEN = """
SELECT t.team_id, t.kind, t.agent_id, a.name, a.status, a.last_active_at,
       tm.rate_limit_task_per_minute, tm.rate_limit_other_per_minute, t.expires_at
FROM api_token t
JOIN team tm ON tm.id = t.team_id
LEFT JOIN agent a ON a.id = t.agent_id
WHERE t.digest = ? AND (t.expires_at IS NULL OR t.expires_at > ?)
"""

_TOUCH_AGENT = """
UPDATE agent SET last_active_at = ?
WHERE id = ? AND (last_active_at IS NULL OR last_active_at < ?)
"""


@cache
def _prepared(statement: str, backend: str) -> str:
    return sql(statement)


def _run(statement: str, params: tuple):
    return database.execute_sql(_prepared(statement, type(database.obj).__name__), params)


def find_token(digest: str, now: int) -> tuple | None:
    """(team_id, kind, agent_id, agent_name, agent_status, last_active_at, task_limit,
    other_limit, expires_at)."""
    return _run(_FIND_TOKEN, (digest, now)).fetchone()


def touch_agent(agent_id: str, now: int, not_since: int) -> None:
    _run(_TOUCH_AGENT, (now, agent_id, not_since))
