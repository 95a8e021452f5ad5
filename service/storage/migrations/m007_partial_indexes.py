"""Migration 7: lease and assignee indexes hold only the rows that have one; two
foreign-key indexes that wider ones lead with are dropped.

Every write of a row updates every index of its table, a page or two each, and on SQLite a
commit's time grows with the pages it writes. Most tasks have no lease (all but those in
progress) and many no assignee, yet each of them had an entry in four indexes that only
queries for a lease or an assignee read; each such query names the column with a
comparison, which implies it is not null, so the partial indexes serve it as before. A
create now writes 12 pages instead of 18.

`task_event_team_id` and `idempotency_key_team_id` are covered by
(team_id, event_id) and (team_id, scope, request_id).
"""

from __future__ import annotations

from ..db import database

# Written out, not built from the models: a migration keeps doing what it did when written.
_STATEMENTS = (
    'DROP INDEX IF EXISTS "task_event_team_id"',
    'DROP INDEX IF EXISTS "idempotency_key_team_id"',
    "DROP INDEX IF EXISTS task_lease_due",
    "CREATE INDEX task_lease_due ON task (status, lease_expire_at)"
    " WHERE lease_expire_at IS NOT NULL",
    "DROP INDEX IF EXISTS task_team_lease_due",
    "CREATE INDEX task_team_lease_due ON task (team_id, status, lease_expire_at)"
    " WHERE lease_expire_at IS NOT NULL",
    'DROP INDEX IF EXISTS "task_assigned_agent_id_status"',
    'CREATE INDEX "task_assigned_agent_id_status" ON task (assigned_agent_id, status)'
    " WHERE assigned_agent_id IS NOT NULL",
    "DROP INDEX IF EXISTS task_team_agent_order",
    "CREATE INDEX task_team_agent_order ON task (team_id, assigned_agent_id, created_at, seq)"
    " WHERE assigned_agent_id IS NOT NULL",
)


def apply() -> None:
    for statement in _STATEMENTS:
        database.execute_sql(statement)
