"""Server processes for `make bench-scale`: AgentTasks on a database seeded with N tasks.

The tasks are written by one set-based INSERT (a recursive CTE on SQLite, generate_series
on PostgreSQL), then the database is analyzed. The mix is a queue after a while: tasks are
created in order, the old ones are done (a few cancelled), the open ones (todo, in
progress) are the newest. Every attribute comes from a multiplicative hash of the row
number, so a size always gets the same rows, spread over projects, agents and priorities.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from typing import Any

from agenttasks.server.config import ServerConfig
from agenttasks.server.domain import agents, pagination, projects, tasks, teams
from agenttasks.server.domain.tasks import TaskFilter
from agenttasks.server.domain.values import MICROS, Caller, TokenKind, could_be_id, now_us
from agenttasks.server.ratelimit import RateLimits
from agenttasks.server.server import create_server
from agenttasks.server.storage import db, migrations

PROJECTS = 5
AGENTS = 8
OPEN_PERCENT = 12  # the newest tasks: todo, in progress, some done
STEP_US = 10_000  # between two seeded tasks' creation
LEASE_US = 24 * 3600 * MICROS  # the leased half of the tasks in progress: still running
COLUMNS = (
    "id, team_id, project_id, title, description, status, priority, assigned_agent_id,"
    " result, progress, due_time, version, lease_expire_at, lease_us, attempt_count,"
    " max_attempts, created_at, updated_at"
)
# ListTasks' filters as the server sees them ("agent" and "project": agent 0, project 0).
STATUSES = ("todo", "in_progress", "done", "cancelled")
FILTERS = ("none", *STATUSES, "project", "agent", "priority")
HIGH = 3


@dataclass
class World:
    team_id: str
    team_key: str
    agent_id: str  # agent 0: claims, and lists its own tasks
    agent_token: str
    project_ids: list[str]
    agent_ids: list[str]


def serve_seeded(conn: Connection, url: str, count: int, page_size: int) -> None:
    """Seeds `count` tasks, then serves; answers ("queue", n) and ("plans",) until ("stop",)."""
    db.open_database(url)
    migrations.migrate()
    world = make_world()
    started = time.monotonic()
    seed_tasks(world, count)
    seconds = time.monotonic() - started
    server = create_server(ServerConfig(host="127.0.0.1", port=0, rate_limits=RateLimits(0, 0, 0)))
    try:
        conn.send(
            {
                "port": server.port,
                "pid": os.getpid(),
                "seed_seconds": seconds,
                "world": asdict(world),
                "task_id": _task_in_the_middle(count),
                "tokens": {name: later_page(world, name, page_size) for name in FILTERS},
            }
        )
        while (command := conn.recv())[0] != "stop":
            if command[0] == "queue":
                conn.send(queue_todo(world, command[1]))
            elif command[0] == "plans":
                conn.send(plans(world, page_size))
    finally:
        server.stop(0)
        db.close()


def make_world() -> World:
    team, key = teams.create_team("bench-scale")
    admin = Caller(team.id, TokenKind.TEAM_API_KEY, None, None)
    made = [agents.create_agent(admin, "", f"agent-{n}", "", "") for n in range(AGENTS)]
    project_ids = [
        projects.create_project(admin, "", f"project-{n}", "", "").id for n in range(PROJECTS)
    ]
    agent_ids = [agent.id for agent, _ in made]
    return World(team.id, key, agent_ids[0], made[0][1], project_ids, agent_ids)


# --- seeding -------------------------------------------------------------------------------


def _hash(multiplier: int, buckets: int) -> str:
    """SQL: a value in [0, buckets) from the high bits of `i * multiplier` (mod 2^32)."""
    return f"(((i * {multiplier}) % 4294967296) * {buckets} / 4294967296)"


def _choose(index: str, ids: list[str]) -> str:
    assert all(could_be_id(i) for i in ids)  # written into the SQL as literals
    return "CASE " + index + "".join(f" WHEN {n} THEN '{i}'" for n, i in enumerate(ids)) + " END"


def _rows(world: World, count: int, now: int) -> str:
    """SELECT of the `count` task rows from `numbers(i)`, i from 1 to `count`."""
    first = now - (count + 1) * STEP_US
    status = (
        f"CASE WHEN i * 100 <= {count} * {100 - OPEN_PERCENT}"
        "  THEN (CASE WHEN u < 95 THEN 'done' ELSE 'cancelled' END)"
        "  ELSE (CASE WHEN u < 55 THEN 'todo' WHEN u < 85 THEN 'in_progress' ELSE 'done' END)"
        " END"
    )
    numbered = (
        f"SELECT i, {_hash(2654435761, 100)} AS u, {_hash(2246822519, 10)} AS v,"
        f" {_hash(3266489917, PROJECTS)} AS p, {_hash(668265263, AGENTS)} AS a,"
        f" {_hash(374761393, 10)} AS w"
        " FROM numbers"
    )
    task_id = "'cseed' || lpad(i::text, 20, '0')" if db.is_postgres() else "printf('cseed%020d', i)"
    return (
        f"SELECT {task_id}, '{world.team_id}', {_choose('p', world.project_ids)},"
        " 'seeded task', '', st,"
        " CASE WHEN v < 2 THEN 1 WHEN v < 8 THEN 2 ELSE 3 END,"  # 20 % low, 20 % high
        # Done and started tasks have an agent; 30 % of the todo ones are assigned.
        " CASE WHEN st IN ('done', 'in_progress') OR (st = 'todo' AND w < 3)"
        f" THEN {_choose('a', world.agent_ids)} END,"
        " CASE WHEN st = 'done' THEN 'ok' END, '', NULL,"
        " CASE st WHEN 'todo' THEN 1 WHEN 'in_progress' THEN 2 ELSE 3 END,"
        f" CASE WHEN st = 'in_progress' AND w < 5 THEN {now + LEASE_US} END,"
        f" CASE WHEN st = 'in_progress' AND w < 5 THEN {LEASE_US} END,"
        " 0, 0,"
        f" {first} + i * {STEP_US}, {first} + i * {STEP_US} + 1000"
        f" FROM (SELECT n.*, {status} AS st FROM ({numbered}) AS n) AS s"
    )


def seed_tasks(world: World, count: int) -> None:
    """Inserts `count` tasks in one statement, then analyzes the database."""
    if db.is_postgres():
        numbers = f"numbers AS (SELECT generate_series(1, {count})::bigint AS i)"
    else:
        numbers = (
            "RECURSIVE numbers(i) AS"
            f" (SELECT 1 UNION ALL SELECT i + 1 FROM numbers WHERE i < {count})"
        )
    _execute(f"WITH {numbers} INSERT INTO task ({COLUMNS}) {_rows(world, count, now_us())}")
    _analyze()


def _execute(statement: str) -> None:
    with db.database.atomic():
        # psycopg2 reads % as the start of a placeholder, even without parameters
        db.database.execute_sql(statement.replace("%", "%%") if db.is_postgres() else statement)


def _analyze() -> None:
    if not db.is_postgres():
        db.database.execute_sql("ANALYZE")
        db.database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return
    # VACUUM too: a table just written has no visibility map and unset hint bits, so its
    # first readers would write; a table of this size in service has been vacuumed.
    connection = db.database.connection()
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
    finally:
        connection.autocommit = False


def queue_todo(world: World, count: int) -> int:
    """`count` more todo tasks for ClaimNextTask (unassigned, the newest, of every priority);
    returns how many todo tasks agent 0 may claim now."""
    now = now_us()
    values = ", ".join(
        f"('cqueue{now}{n:06d}', '{world.team_id}', '{world.project_ids[n % PROJECTS]}',"
        f" 'queued', '', 'todo', {1 + n % 3}, NULL, NULL, '', NULL, 1, NULL, NULL, 0, 0,"
        f" {now + n}, {now + n})"
        for n in range(count)
    )
    _execute(f"INSERT INTO task ({COLUMNS}) VALUES {values}")
    return _scalar(
        "SELECT COUNT(*) FROM task WHERE team_id = ? AND status = 'todo'"
        " AND (assigned_agent_id IS NULL OR assigned_agent_id = ?)",
        world.team_id,
        world.agent_id,
    )


def _scalar(statement: str, *params: Any) -> Any:
    return db.database.execute_sql(db.sql(statement), params).fetchone()[0]


def _task_in_the_middle(count: int) -> str:
    return f"cseed{max(count // 2, 1):020d}"


# --- what the calls read -------------------------------------------------------------------


def task_filter(world: World, name: str) -> TaskFilter:
    """ListTasks' filter `name` as the server builds it from the request."""
    if name in STATUSES:
        return TaskFilter(status=name)
    if name == "project":
        return TaskFilter(project_id=world.project_ids[0])
    if name == "agent":
        return TaskFilter(agent_id=world.agent_id)
    if name == "priority":
        return TaskFilter(priority=HIGH)
    return TaskFilter()


def _condition(world: World, name: str) -> str:
    """The filter in plain SQL: every seeded lease still runs, so stored is as seen."""
    where = task_filter(world, name)
    if where.status:
        return f"status = '{where.status}'"
    if where.project_id:
        return f"project_id = '{where.project_id}'"
    if where.agent_id:
        return f"assigned_agent_id = '{where.agent_id}'"
    if where.priority:
        return f"priority = {where.priority}"
    return "1 = 1"


def later_page(world: World, name: str, page_size: int) -> str:
    """The page token that resumes the listing `name` half-way (or at its last full page
    when it is short): the token the server hands out after the page ending at that row."""
    condition = f"team_id = ? AND {_condition(world, name)}"
    count = _scalar(f"SELECT COUNT(*) FROM task WHERE {condition}", world.team_id)
    skip = min(count // 2, count - page_size - 1)
    if skip < 0:
        return ""
    created_at, seq = db.database.execute_sql(
        db.sql(
            f"SELECT created_at, seq FROM task WHERE {condition}"
            f" ORDER BY created_at, seq LIMIT 1 OFFSET {skip}"
        ),
        (world.team_id,),
    ).fetchone()
    page = pagination.parse_page(page_size, "", ("tasks", world.team_id, task_filter(world, name)))
    return pagination.next_token(page, created_at, seq)


def plans(world: World, page_size: int) -> dict[str, str]:
    """The database's plan of each ListTasks statement (first page, and half-way) and of the
    ClaimNextTask pick, with the values the benchmark's calls send. PostgreSQL's are
    EXPLAIN ANALYZE (the pick's in a transaction rolled back)."""
    now = now_us()
    found = {}
    for name in FILTERS:
        where = task_filter(world, name)
        params: dict[str, Any] = dict(team=world.team_id, now=now, limit=page_size + 1)
        params.update(project=where.project_id, agent=where.agent_id, priority=where.priority)
        found[f"ListTasks {name}"] = _plan(tasks.list_page(where, False), **params)
        token = later_page(world, name, page_size)
        if token:
            after = pagination.parse_page(page_size, token, ("tasks", world.team_id, where)).after
            assert after is not None
            params.update(after_created=after[0], after_seq=after[1])
            found[f"ListTasks {name}, later page"] = _plan(tasks.list_page(where, True), **params)
    pick = tasks.pick_statement(False, False)
    found["ClaimNextTask pick"] = _plan(pick, team=world.team_id, agent=world.agent_id)
    return found


def _plan(statement, **params: Any) -> str:
    sql, values = statement.sql(**params)
    if not db.is_postgres():
        rows = db.database.execute_sql("EXPLAIN QUERY PLAN " + sql, values).fetchall()
        return "\n".join(row[-1] for row in rows)
    with db.database.atomic() as transaction:
        rows = db.database.execute_sql("EXPLAIN (ANALYZE, BUFFERS) " + sql, values).fetchall()
        transaction.rollback()
    return "\n".join(row[0] for row in rows)
