"""The `agenttasks` command, run as a user runs it: a subprocess on a real database."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agenttasks.v1 import projects_pb2, teams_pb2

from .helpers import Client

_SCRIPT = Path(sys.executable).parent / "agenttasks"
AGENTTASKS = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "agenttasks.server.cli"]
TEAM_KEY = re.compile(r"tk_[0-9a-f]{64}")
ANY_TOKEN = re.compile(r"(tk|at)_[0-9a-f]{64}")
ID = re.compile(r"[a-z][a-z0-9]+")
TABLES = {"team", "agent", "api_token", "project", "task", "task_event", "idempotency_key"}
START_TIMEOUT = 60  # seconds a server gets to come up (polled, not asserted)


def cli_env() -> dict[str, str]:
    """The environment without AGENTTASKS_* settings, so only the flags given count."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AGENTTASKS_")}


def agenttasks(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENTTASKS, *args], capture_output=True, text=True, cwd=cwd, env=cli_env(), timeout=120
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Served:
    """`agenttasks serve` in a subprocess on a free port; stdout and stderr go to files."""

    def __init__(self, workdir: Path, *args: str) -> None:
        self.port = free_port()
        self.stdout_path = workdir / f"serve-{self.port}.stdout"
        self.stderr_path = workdir / f"serve-{self.port}.stderr"
        command = [*AGENTTASKS, "serve", "--host", "127.0.0.1", "--port", str(self.port), *args]
        with self.stdout_path.open("w") as out, self.stderr_path.open("w") as err:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=err, cwd=workdir, env=cli_env()
            )
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def client(self, token: str) -> Client:
        return Client(self.channel, token)

    def health(self, service: str = "") -> int:
        stub = health_pb2_grpc.HealthStub(self.channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status

    def wait_serving(self) -> None:
        """Polls the health service until it answers SERVING (fails if the process dies)."""
        stub = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"serve exited with {self.process.returncode}:\n{self.stderr}")
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"serve did not come up within {START_TIMEOUT} s:\n{self.stderr}")
            time.sleep(0.1)

    def terminate(self) -> int:
        """Sends SIGTERM and returns the exit code."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve ignored SIGTERM:\n{self.stderr}")

    def close(self) -> None:
        self.channel.close()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@pytest.fixture
def fresh_url(backend, database_url, tmp_path) -> Iterator[str]:
    """An empty database (no schema) of the backend under test, dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    import psycopg2

    name = f"agenttasks_cli_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(database_url, connect_timeout=5)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(database_url)._replace(path="/" + name))
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def query(url: str, sql: str) -> list[tuple]:
    """Runs one read-only statement against the database at `url`, from outside the server."""
    if url.startswith("sqlite:///"):
        connection = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return connection.execute(sql).fetchall()
        finally:
            connection.close()
    import psycopg2

    with psycopg2.connect(url, connect_timeout=5) as connection, connection.cursor() as cursor:
        cursor.execute(sql)
        rows = cursor.fetchall()
    connection.close()
    return rows


def table_names(url: str) -> set[str]:
    if url.startswith("sqlite"):
        rows = query(url, "SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        rows = query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {name for (name,) in rows}


def who_am_i(client: Client) -> teams_pb2.WhoAmIResponse:
    return client.teams.WhoAmI(teams_pb2.WhoAmIRequest(), timeout=10)


# --- team create ----------------------------------------------------------------------------


def test_team_create_json_prints_one_line(fresh_url, tmp_path):
    done = agenttasks(
        "team", "create", "--name", "Research", "--json", "--db", fresh_url, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("\n")
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    created = json.loads(lines[0])
    assert list(created) == ["teamId", "apiKey"]
    assert ID.fullmatch(created["teamId"])
    assert TEAM_KEY.fullmatch(created["apiKey"])
    assert created["apiKey"] not in done.stderr

    # It migrated the fresh database first; a second team gets its own id and key.
    assert table_names(fresh_url) >= TABLES
    again = agenttasks("team", "create", "--name", "Ops", "--json", "--db", fresh_url, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["teamId"] != created["teamId"]
    assert second["apiKey"] != created["apiKey"]

    # Only digests are stored: the key itself is nowhere in the database.
    digests = {digest for (digest,) in query(fresh_url, "SELECT digest FROM api_token")}
    assert len(digests) == 2
    assert created["apiKey"] not in digests

    # The printed keys work; a database that has teams gets no `default` team.
    with Served(tmp_path, "--db", fresh_url) as served:
        served.wait_serving()
        assert not ANY_TOKEN.search(served.stderr)
        for team, name in ((created, "Research"), (second, "Ops")):
            client = served.client(team["apiKey"])
            me = who_am_i(client)
            assert me.team_id == team["teamId"]
            assert me.token_kind == teams_pb2.TOKEN_KIND_TEAM_API_KEY
            got = client.teams.GetTeam(teams_pb2.GetTeamRequest(), timeout=10).team
            assert (got.id, got.name) == (team["teamId"], name)
        assert served.terminate() == 0
    assert [name for (name,) in query(fresh_url, "SELECT name FROM team ORDER BY seq")] == [
        "Research",
        "Ops",
    ]


def test_team_create_without_json_prints_the_key_once(fresh_url, tmp_path):
    done = agenttasks("team", "create", "--name", "Humans", "--db", fresh_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Team 'Humans' created" in done.stdout
    assert len(TEAM_KEY.findall(done.stdout)) == 1
    assert not TEAM_KEY.search(done.stderr)


def test_team_create_refuses_a_blank_name(fresh_url, tmp_path):
    done = agenttasks("team", "create", "--name", "   ", "--json", "--db", fresh_url, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "name: must not be empty" in done.stderr
    assert query(fresh_url, "SELECT COUNT(*) FROM team") == [(0,)]


# --- migrate --------------------------------------------------------------------------------


def test_migrate_fresh_database_then_idempotent(fresh_url, tmp_path):
    first = agenttasks("migrate", "--db", fresh_url, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    matched = re.fullmatch(r"schema at version (\d+) \(applied \[([\d, ]+)\]\)\n", first.stdout)
    assert matched, first.stdout
    version = int(matched[1])
    assert [int(v) for v in matched[2].split(",")] == list(range(1, version + 1))
    assert table_names(fresh_url) >= TABLES | {"schema_migration"}
    recorded = [v for (v,) in query(fresh_url, "SELECT version FROM schema_migration ORDER BY 1")]
    assert recorded == list(range(1, version + 1))

    for _ in range(2):
        again = agenttasks("migrate", "--db", fresh_url, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert again.stdout == f"schema at version {version}\n"
    recorded = [v for (v,) in query(fresh_url, "SELECT version FROM schema_migration ORDER BY 1")]
    assert recorded == list(range(1, version + 1))


# --- serve ----------------------------------------------------------------------------------


def test_serve_on_an_empty_database(fresh_url, tmp_path):
    with Served(tmp_path, "--db", fresh_url) as served:
        served.wait_serving()
        assert served.health("agenttasks.v1.TaskService") == health_pb2.HealthCheckResponse.SERVING
        printed = served.stderr
        keys = TEAM_KEY.findall(printed)
        assert len(keys) == 1, printed
        key = keys[0]
        team_id = re.search(r"Created team 'default' \(id ([a-z0-9]+)\)", printed)
        assert team_id, printed
        assert not ANY_TOKEN.search(served.stdout)

        client = served.client(key)
        me = who_am_i(client)
        assert me.team_id == team_id[1]
        assert me.token_kind == teams_pb2.TOKEN_KIND_TEAM_API_KEY
        assert client.teams.GetTeam(teams_pb2.GetTeamRequest(), timeout=10).team.name == "default"
        client.projects.CreateProject(projects_pb2.CreateProjectRequest(name="Kept"), timeout=10)
        assert served.terminate() == 0

    # A second start finds the team: nothing is created or printed, the data is still there.
    with Served(tmp_path, "--db", fresh_url) as served:
        served.wait_serving()
        assert "Created team" not in served.stderr
        assert not ANY_TOKEN.search(served.stderr + served.stdout)
        client = served.client(key)
        assert who_am_i(client).team_id == team_id[1]
        projects = client.projects.ListProjects(projects_pb2.ListProjectsRequest(), timeout=10)
        assert [p.name for p in projects.projects] == ["Kept"]
        assert served.terminate() == 0
    assert query(fresh_url, "SELECT COUNT(*) FROM team") == [(1,)]


def test_serve_defaults_to_agenttasks_db_in_the_working_directory(tmp_path):
    with Served(tmp_path) as served:
        served.wait_serving()
        (key,) = TEAM_KEY.findall(served.stderr)
        assert who_am_i(served.client(key)).token_kind == teams_pb2.TOKEN_KIND_TEAM_API_KEY
        assert served.terminate() == 0
    assert (tmp_path / "agenttasks.db").is_file()
    assert query("sqlite:///" + str(tmp_path / "agenttasks.db"), "SELECT name FROM team") == [
        ("default",)
    ]


def test_commands_share_a_database_with_running_servers(database_url, world, channel, tmp_path):
    """The suite's migrated database, served in-process, gets a second server process,
    `migrate` and `team create` while both run; both servers see the same data."""
    with Served(tmp_path, "--db", database_url) as served:
        served.wait_serving()
        assert not ANY_TOKEN.search(served.stderr), "a database with teams got a default team"
        assert who_am_i(served.client(world.key)).team_id == world.id

        migrated = agenttasks("migrate", "--db", database_url, cwd=tmp_path)
        assert migrated.returncode == 0, migrated.stderr
        assert re.fullmatch(r"schema at version \d+\n", migrated.stdout), migrated.stdout

        done = agenttasks(
            "team", "create", "--name", "Late", "--json", "--db", database_url, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr
        assert len(done.stdout.splitlines()) == 1
        created = json.loads(done.stdout)
        assert TEAM_KEY.fullmatch(created["apiKey"])
        for where in (served.channel, channel):
            assert who_am_i(Client(where, created["apiKey"])).team_id == created["teamId"]

        project = (
            served.client(world.key)
            .projects.CreateProject(projects_pb2.CreateProjectRequest(name="Shared"), timeout=10)
            .project
        )
        seen = world.admin.projects.GetProject(
            projects_pb2.GetProjectRequest(project_id=project.id)
        ).project
        assert (seen.id, seen.name, seen.team_id) == (project.id, "Shared", world.id)
        assert served.terminate() == 0

    # The in-process server is unaffected by the other one stopping.
    assert who_am_i(world.admin).team_id == world.id


def test_serve_with_workers_forks_servers_that_share_the_port(fresh_url, tmp_path):
    with Served(tmp_path, "--db", fresh_url, "--workers", "2") as served:
        served.wait_serving()
        key = TEAM_KEY.search(served.stderr).group(0)
        assert served.stderr.count(key) == 1
        children = subprocess.run(
            ["pgrep", "-P", str(served.process.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(children) == 2
        # Many fresh connections are spread over the processes; every one is answered.
        for _ in range(20):
            with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
                assert (
                    who_am_i(Client(channel, key)).token_kind == teams_pb2.TOKEN_KIND_TEAM_API_KEY
                )
        assert served.terminate() == 0
        assert not any(_running(pid) for pid in children)


def _running(pid: str) -> bool:
    """Whether the process exists and has not ended (a zombie waits only to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_forked_servers_stop_when_their_parent_is_killed(tmp_path):
    # SIGKILL passes nothing on to the children: they notice the parent is gone.
    with Served(tmp_path, "--db", "sqlite:///w.db", "--workers", "2") as served:
        served.wait_serving()
        children = subprocess.run(
            ["pgrep", "-P", str(served.process.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(children) == 2
        served.process.kill()
        served.process.wait(timeout=30)

        deadline = time.monotonic() + 30
        while any(_running(pid) for pid in children):
            assert time.monotonic() < deadline, f"still running: {children}\n{served.stderr}"
            time.sleep(0.1)
    assert served.stderr.count("is gone: stopping") == 2


def test_a_bad_setting_is_a_clear_error_not_a_traceback(tmp_path):
    done = subprocess.run(
        [*AGENTTASKS, "migrate", "--db", f"sqlite:///{tmp_path / 'x.db'}"],
        capture_output=True,
        text=True,
        env={**cli_env(), "AGENTTASKS_PORT": "eighty"},
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "agenttasks: AGENTTASKS_PORT must be a whole number from 0 to 65535, not 'eighty'"
    )
