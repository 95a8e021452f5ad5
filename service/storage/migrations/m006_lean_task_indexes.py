"""Migration 6: drops four task indexes that others already cover.

Every task write updates every index of the table, and these four served no query the
others do not: `team_id`, `project_id` and `assigned_agent_id` alone lead wider indexes
(which also back their foreign keys), and (team, status, priority, created_at, seq) is
covered by `task_team_status_order` for listings and by `task_pick_next` for the claim pick.
"""

from __future__ import annotations

from ..db import database

_DROPPED = (
    "task_team_id",
    "task_project_id",
    "task_assigned_agent_id",
    "task_team_id_status_priority_created_at_seq",
)


def apply() -> None:
    for name in _DROPPED:
        database.execute_sql(f'DROP INDEX IF EXISTS "{name}"')
