"""Upgrades: a database the first release made keeps every row and ends with a new one's schema.

The old database is built from outside this process (migration 1 only, rows by plain
SQL), then a real `agenttasks serve` upgrades it on start and serves it, so the shared
test server's database binding is never touched.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
from playhouse.db_url import connect as connect_url

from agenttasks.server.storage import migrations
from agenttasks.v1 import agents_pb2, projects_pb2, tasks_pb2, teams_pb2

from .conftest import POSTGRES_URL, _postgres_database
from .test_cli import Served, agenttasks, cli_env

TEAM_KEY = "tk_" + "a1" * 32
AGENT_TOKEN = "at_" + "b2" * 32
T0 = 1_780_000_000_123_456  # µs: 2026-05-28T20:26:40.123456Z
MINUTE = 60_000_000

# The first release's way to start a database: migration 1 and nothing after it.
_MIGRATE_TO_1 = """
import sys
from agenttasks.server.storage import db, migrations
db.open_database(sys.argv[1])
migrations.MIGRATIONS = migrations.MIGRATIONS[:1]
migrations.migrate()
"""

# What the live models build, for comparison with what the migrations build.
_CREATE_FROM_MODELS = """
import sys
from agenttasks.server.storage import db, models
db.open_database(sys.argv[1])
db.database.create_tables([*models.MODELS, models.SchemaMigration])
"""


@pytest.fixture
def empty_database(backend, tmp_path) -> Iterator[Callable[[], str]]:
    """Makes empty databases (no tables) of the backend under test; dropped afterwards."""
    cleanups: list[Iterator[str]] = []
    made = itertools.count()

    def make() -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp_path / f'db{next(made)}.db'}"
        urls = _postgres_database(POSTGRES_URL)
        cleanups.append(urls)
        return next(urls)

    yield make
    for urls in cleanups:
        next(urls, None)


def run_python(code: str, url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", code, url], capture_output=True, text=True, env=cli_env()
    )
    assert done.returncode == 0, done.stderr


def execute(url: str, *statements: tuple[str, tuple]) -> list[list[tuple]]:
    """Runs statements (`?` placeholders) in one transaction on a connection of their own."""
    raw = connect_url(url)
    try:
        with raw.atomic():
            results = []
            for sql, params in statements:
                cursor = raw.execute_sql(sql.replace("?", raw.param), params)
                results.append(cursor.fetchall() if cursor.description else [])
            return results
    finally:
        raw.close()


def query(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    return execute(url, (sql, params))[0]


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def old_dump(**task) -> str:
    """An event row's `task_json` as the first release wrote it: `json.dumps(Task.__data__)`."""
    return json.dumps(task, separators=(",", ":"))


TODO_TASK = {
    "seq": 1,
    "id": "ctodo",
    "team": "cteam",
    "project": "cproject",
    "title": "Write the report",
    "description": "Quarterly",
    "status": "todo",
    "priority": 3,
    "assigned_agent": None,
    "progress": "",
    "due_time": None,
    "version": 1,
    "lease_expire_at": None,
    "lease_us": None,
    "attempt_count": 0,
    "max_attempts": 0,
    "created_at": T0,
    "updated_at": T0,
}  # no "result": the old model left it out of `__data__` until it was set
WORKING_TASK = {
    **TODO_TASK,
    "seq": 2,
    "id": "cworking",
    "title": "Fix the build",
    "description": "",
    "status": "in_progress",
    "priority": 1,
    "assigned_agent": "cagent",
    "result": None,
    "progress": "half way",
    "due_time": T0 + 60 * MINUTE,
    "version": 2,
    "lease_expire_at": 4_102_444_800_123_465,  # 2100: a lease still running after the upgrade
    "lease_us": 5 * MINUTE,
    "attempt_count": 1,
    "max_attempts": 3,
    "updated_at": T0 + MINUTE - 123_455,
}
WORKING_PAYLOAD = (
    '{"id":"cworking","teamId":"cteam","projectId":"cproject","title":"Fix the build",'
    '"description":"","status":"in_progress","priority":"low","assignedAgentId":"cagent",'
    '"result":null,"progress":"half way","dueTime":"2026-05-28T21:26:40.123456Z",'
    '"createdAt":"2026-05-28T20:26:40.123456Z","updatedAt":"2026-05-28T20:27:40.000001Z",'
    '"etag":"2","leaseExpireTime":"2100-01-01T00:00:00.123465Z","attemptCount":1,'
    '"maxAttempts":3}'
)


def _task_row(task: dict) -> tuple:
    return tuple(
        task.get(key)
        for key in (
            "id",
            "team",
            "project",
            "title",
            "description",
            "status",
            "priority",
            "assigned_agent",
            "result",
            "progress",
            "due_time",
            "version",
            "lease_expire_at",
            "lease_us",
            "attempt_count",
            "max_attempts",
            "created_at",
            "updated_at",
        )
    )


def make_old_database(url: str) -> None:
    """A database as the first release left it: schema version 1, a team with some work."""
    run_python(_MIGRATE_TO_1, url)
    execute(
        url,
        (
            "INSERT INTO team (id, name, rate_limit_task_per_minute, rate_limit_other_per_minute,"
            " default_lease_us, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            ("cteam", "Old team", 600, None, 5 * MINUTE, T0, T0),
        ),
        (
            "INSERT INTO agent (id, team_id, name, description, status, last_active_at,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ("cagent", "cteam", "Alice", "builds things", "active", None, T0, T0),
        ),
        *(
            (
                "INSERT INTO api_token (digest, team_id, agent_id, kind, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (digest(token), "cteam", agent_id, kind, T0, None),
            )
            for token, agent_id, kind in (
                (TEAM_KEY, None, "team"),
                (AGENT_TOKEN, "cagent", "agent"),
            )
        ),
        (
            "INSERT INTO project (id, team_id, name, description, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            ("cproject", "cteam", "Old project", "kept", T0, T0),
        ),
        *(
            (
                "INSERT INTO task (id, team_id, project_id, title, description, status,"
                " priority, assigned_agent_id, result, progress, due_time, version,"
                " lease_expire_at, lease_us, attempt_count, max_attempts, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _task_row(task),
            )
            for task in (TODO_TASK, WORKING_TASK)
        ),
        *(
            (
                "INSERT INTO task_event (team_id, task_id, event, agent_id, agent_name, reason,"
                " task_json, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                ("cteam", task["id"], event, agent, name, "", old_dump(**task), task["updated_at"]),
            )
            for task, event, agent, name in (
                (TODO_TASK, "task.created", None, None),
                ({**WORKING_TASK, "status": "todo", "version": 1}, "task.created", None, None),
                (WORKING_TASK, "task.claimed", "cagent", "Alice"),
            )
        ),
    )


def catalog(url: str) -> dict[str, list]:
    """Every table's columns, indexes and constraints, as the database itself reports them."""
    if url.startswith("sqlite"):
        tables = [
            name
            for (name,) in query(
                url, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        result = {}
        for table in tables:
            indexes = sorted(query(url, f'PRAGMA index_list("{table}")'), key=lambda row: row[1])
            result[table] = [
                query(url, f'PRAGMA table_info("{table}")'),
                [(row[1:], query(url, f'PRAGMA index_info("{row[1]}")')) for row in indexes],
                query(url, f'PRAGMA foreign_key_list("{table}")'),
            ]
        return result
    return {
        "columns": query(
            url,
            "SELECT table_name, column_name, data_type, character_maximum_length, is_nullable,"
            " column_default FROM information_schema.columns WHERE table_schema = 'public'"
            " ORDER BY table_name, ordinal_position",
        ),
        "indexes": query(
            url,
            "SELECT tablename, indexname, indexdef FROM pg_indexes"
            " WHERE schemaname = 'public' ORDER BY tablename, indexname",
        ),
        "constraints": query(
            url,
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
        ),
    }


def payloads(url: str, task_id: str) -> list[tuple]:
    return query(
        url,
        "SELECT event, project_id, status, priority, assigned_agent_id, format, payload"
        " FROM task_event WHERE task_id = ? ORDER BY event_id",
        (task_id,),
    )


def test_an_old_database_upgrades_without_loss_to_the_schema_of_a_new_one(empty_database, tmp_path):
    old = empty_database()
    make_old_database(old)

    # --no-workers: the old rows stay as they were (the sweeper would expire the old lease).
    with Served(tmp_path, "--db", old, "--no-workers") as served:  # serve migrates on start
        served.wait_serving()
        team = served.client(TEAM_KEY)
        agent = served.client(AGENT_TOKEN)

        me = agent.teams.WhoAmI(teams_pb2.WhoAmIRequest(), timeout=10)
        assert (me.team_id, me.token_kind, me.agent_id) == (
            "cteam",
            teams_pb2.TOKEN_KIND_AGENT,
            "cagent",
        )
        got_team = team.teams.GetTeam(teams_pb2.GetTeamRequest(team_id="cteam"), timeout=10).team
        assert (got_team.name, got_team.settings.rate_limit_task_per_minute) == ("Old team", 600)
        assert got_team.settings.default_lease_duration.ToMicroseconds() == 5 * MINUTE
        projects = team.projects.ListProjects(
            projects_pb2.ListProjectsRequest(team_id="cteam"), timeout=10
        ).projects
        assert [(p.id, p.name, p.description, p.task_count) for p in projects] == [
            ("cproject", "Old project", "kept", 2)
        ]
        agents = team.agents.ListAgents(
            agents_pb2.ListAgentsRequest(team_id="cteam"), timeout=10
        ).agents
        assert [(a.id, a.name, a.description, a.status, a.task_count) for a in agents] == [
            ("cagent", "Alice", "builds things", agents_pb2.AGENT_STATUS_ACTIVE, 1)
        ]

        working = team.tasks.GetTask(tasks_pb2.GetTaskRequest(task_id="cworking"), timeout=10).task
        assert (working.title, working.status, working.priority, working.assigned_agent_id) == (
            "Fix the build",
            tasks_pb2.TASK_STATUS_IN_PROGRESS,
            tasks_pb2.TASK_PRIORITY_LOW,
            "cagent",
        )
        assert (working.etag, working.progress, working.attempt_count, working.max_attempts) == (
            "2",
            "half way",
            1,
            3,
        )
        assert working.due_time.ToMicroseconds() == WORKING_TASK["due_time"]
        assert working.lease_expire_time.ToMicroseconds() == WORKING_TASK["lease_expire_at"]
        assert working.created_at.ToMicroseconds() == T0
        assert working.updated_at.ToMicroseconds() == WORKING_TASK["updated_at"]

        # The upgraded database takes new work: the old agent token claims the old task.
        claimed = agent.tasks.ClaimTask(tasks_pb2.ClaimTaskRequest(task_id="ctodo"), timeout=10)
        assert claimed.task.status == tasks_pb2.TASK_STATUS_IN_PROGRESS
        assert served.terminate() == 0

    # Old events were converted; the new one is written in the same format.
    assert payloads(old, "cworking")[-1] == (
        "task.claimed",
        "cproject",
        "in_progress",
        1,
        "cagent",
        1,
        WORKING_PAYLOAD,
    )
    todo_events = payloads(old, "ctodo")
    assert [row[:6] for row in todo_events] == [
        ("task.created", "cproject", "todo", 3, None, 1),
        ("task.claimed", "cproject", "in_progress", 3, "cagent", 1),
    ]
    first, claim = (json.loads(row[6]) for row in todo_events)
    assert first["result"] is None and first["priority"] == "high"
    assert list(claim) == list(json.loads(WORKING_PAYLOAD))

    fresh = empty_database()
    done = agenttasks("migrate", "--db", fresh, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert catalog(old) == catalog(fresh)


def test_the_live_models_describe_exactly_the_schema_the_migrations_build(empty_database, tmp_path):
    migrated, from_models = empty_database(), empty_database()
    assert agenttasks("migrate", "--db", migrated, cwd=tmp_path).returncode == 0
    run_python(_CREATE_FROM_MODELS, from_models)

    schema = catalog(migrated)
    assert "task_event" in str(schema)  # not two empty catalogs agreeing
    assert schema == catalog(from_models)


def test_a_database_newer_than_the_code_is_refused_with_one_line(empty_database, tmp_path):
    url = empty_database()
    assert agenttasks("migrate", "--db", url, cwd=tmp_path).returncode == 0
    known = max(version for version, _, _ in migrations.MIGRATIONS)
    execute(
        url,
        (
            "INSERT INTO schema_migration (version, name, applied_at) VALUES (?, ?, ?)",
            (known + 5, "from the future", T0),
        ),
    )

    for command in (
        ["migrate"],
        ["serve", "--host", "127.0.0.1", "--port", "0"],
        ["team", "create", "--name", "Late"],
    ):
        done = agenttasks(*command, "--db", url, cwd=tmp_path)
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr == (
            f"agenttasks: database schema is at version {known + 5} but this agenttasks knows"
            f" up to {known}: upgrade agenttasks (then run `agenttasks migrate`)\n"
        ), command
        assert done.stdout == ""
    # Nothing was changed: the database still stands where the newer code left it.
    assert query(url, "SELECT max(version) FROM schema_migration") == [(known + 5,)]
