"""The work queue's storage without gRPC: query plans stay on indexes, and a resume point
that retention passed is refused with the oldest event kept."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agenttasks.server.domain import events, leases, lifecycle, projects, retention, tasks, teams
from agenttasks.server.domain.errors import EventsExpired
from agenttasks.server.domain.tasks import TaskFilter
from agenttasks.server.domain.values import MICROS, Caller, TokenKind, now_us
from agenttasks.server.storage import db
from agenttasks.server.storage import events as stored

from ..fresh import fresh_database

FILTERS = [
    TaskFilter(),
    *(TaskFilter(status=s) for s in ("todo", "in_progress", "done", "cancelled")),
    TaskFilter(project_id="cproject"),
    TaskFilter(agent_id="cagent"),
    TaskFilter(priority=3),
]


def plan(statement, *, sorted_by_index: bool = False, **params) -> str:
    """The database's plan for the statement the server runs. PostgreSQL is told to avoid
    sequential scans (and with `sorted_by_index`, sorts), so a plan without them exists only
    if an index can serve the query as it would at 1 M rows, whatever the few test rows
    make it prefer."""
    sql, params = statement.sql(**params) if params else statement.sql()
    if db.is_postgres():
        with db.database.atomic():
            db.database.execute_sql("SET LOCAL enable_seqscan = off")
            if sorted_by_index:
                db.database.execute_sql("SET LOCAL enable_sort = off")
            rows = db.database.execute_sql("EXPLAIN " + sql, params).fetchall()
        return "\n".join(row[0] for row in rows)
    rows = db.database.execute_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    return "\n".join(row[-1] for row in rows)


def assert_on_an_index(text: str) -> None:
    assert "Seq Scan" not in text, text
    assert "Index" in text or "USING INDEX" in text or "USING COVERING INDEX" in text, text
    # SQLite scans the rows a union's parts (subqueries) return; never a table.
    tables = [line for line in text.splitlines() if not line.startswith("SCAN part")]
    assert not any(line.startswith("SCAN") and "INDEX" not in line for line in tables), text


@pytest.mark.parametrize("project_id, priority", [("", 0), ("cproject", 3), ("", 1)])
def test_the_next_task_pick_reads_an_index_in_its_order(database_url, project_id, priority):
    text = plan(
        tasks.pick_statement(bool(project_id), bool(priority)),
        sorted_by_index=not project_id and not priority,
        team="cteam",
        agent="cagent",
        project=project_id,
        priority=priority,
    )

    assert_on_an_index(text)
    if not project_id and not priority:
        assert "task_pick_next" in text, text
        assert "TEMP B-TREE" not in text and "Sort" not in text, text


@pytest.mark.parametrize("where", FILTERS, ids=repr)
def test_each_list_filter_reads_an_index_page_by_page(database_url, where):
    page = tasks.list_page(where, resumed=True)
    params = dict(project=where.project_id, agent=where.agent_id, priority=where.priority)

    text = plan(page, team="cteam", now=now_us(), limit=51, after_created=1, after_seq=2, **params)

    assert_on_an_index(text)


@pytest.mark.parametrize("status", ["todo", "cancelled"])
@pytest.mark.parametrize("resumed", [False, True], ids=["first", "resumed"])
def test_a_status_that_expired_leases_give_reads_its_stored_rows_by_status(
    database_url, status, resumed
):
    # The rows stored with the status are one range of task_team_status_order, in page
    # order; the rows whose lease ran out are a part of their own. Read as one condition,
    # the first todo page under a million done tasks walked them all.
    page = tasks.list_page(TaskFilter(status=status), resumed)

    text = plan(page, team="cteam", now=now_us(), limit=51, after_created=1, after_seq=2)

    assert_on_an_index(text)
    assert "task_team_status_order" in text, text
    assert uses_one_of(LEASE_INDEXES, text), text  # the expired leases, few
    assert "UNION ALL" in text or "Append" in text, text


# Migration 7's partial indexes: they hold only the rows with a lease, or an assignee, so
# a query can read them only if its condition implies that. Which of two an empty
# PostgreSQL table prefers is its own affair; that it can use one of them is the point.
LEASE_INDEXES = ("task_lease_due", "task_team_lease_due")
ASSIGNEE_INDEXES = ("task_assigned_agent_id_status", "task_team_agent_order")


def uses_one_of(indexes: tuple[str, ...], text: str) -> bool:
    return any(name in text for name in indexes)


@pytest.mark.parametrize("team", [None, "cteam"], ids=["sweeper", "claim-next"])
def test_the_lease_sweep_reads_a_lease_index(database_url, team):
    due = leases.DUE_OF_TEAM if team else leases.DUE

    text = plan(due, now=1, team=team, limit=100)

    assert_on_an_index(text)
    assert uses_one_of(LEASE_INDEXES, text), text


def test_the_next_lease_end_of_a_team_reads_a_lease_index(database_url):
    text = plan(tasks._NEXT_LEASE_END, team="cteam")

    assert_on_an_index(text)
    assert uses_one_of(LEASE_INDEXES, text), text


def test_the_tasks_of_an_agent_read_an_assignee_index(database_url):
    page = tasks.list_page(TaskFilter(agent_id="cagent"), resumed=True)
    listed = plan(
        page,
        sorted_by_index=True,
        team="cteam",
        now=now_us(),
        limit=51,
        after_created=1,
        after_seq=2,
        project="",
        agent="cagent",
        priority=0,
    )
    held = plan(lifecycle.held_by("cagent"))

    assert "task_team_agent_order" in listed, listed  # in page order
    assert uses_one_of(ASSIGNEE_INDEXES, held), held


@pytest.fixture
def alone(backend, tmp_path) -> Iterator[str]:
    """A database of its own: the retention mark is one for the whole database."""
    with fresh_database(backend, tmp_path) as url:
        yield url


def test_retention_raises_the_mark_and_a_resume_below_it_is_refused(alone):
    team, _ = teams.create_team("Watchers")
    caller = Caller(team.id, TokenKind.TEAM_API_KEY)
    project = projects.create_project(caller, "", "Old", "", "")
    for n in range(4):
        tasks.create_task(caller, "", project.id, f"task {n}")
    ids = [e.event_id for e in events.events_after(team.id, 0, 100)]
    assert stored.retention_mark() == 0
    events.check_resumable(team.id, 0)

    retention.delete_events_before(now_us() + MICROS, limit=2)

    assert stored.retention_mark() == ids[1]
    events.check_resumable(team.id, ids[1])  # everything after it is still there
    with pytest.raises(EventsExpired) as refused:
        events.check_resumable(team.id, ids[0])
    assert f"the oldest event kept is {ids[2]}" in refused.value.message
    stored.note_retention(ids[0])  # a lower mark never lowers it
    assert stored.retention_mark() == ids[1]
