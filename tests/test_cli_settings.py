"""Bad settings are one line and exit code 2; team list and rotate-key recover keys."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from agenttasks.client import AgentTasksError, connect
from agenttasks.server.domain import tokens
from agenttasks.v1 import teams_pb2

from .conftest import POSTGRES_URL
from .test_cli import AGENTTASKS, ID, TEAM_KEY, agenttasks, cli_env

MISSING_PG = POSTGRES_URL.rsplit("/", 1)[0] + "/agenttasks_no_such_database"

ENV_SETTINGS = [
    "DB_URL",
    "HOST",
    "PORT",
    "WORKERS",
    "MAX_WORKERS",
    "NO_REFLECTION",
    "ALLOW_PRIVATE_WEBHOOKS",
    "RATE_LIMIT_TASK",
    "RATE_LIMIT_OTHER",
    "RATE_LIMIT_AUTH_FAILURES",
    "SHUTDOWN_GRACE",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "METRICS_PORT",
    "TLS_CERT",
    "TLS_KEY",
    "TLS_CLIENT_CA",
]

# (arguments, environment, what the one line must say)
BAD_SETTINGS = [
    (["migrate", "--db", "mysql://x"], {}, "'mysql://x' is not a supported database URL"),
    (["migrate", "--db", "notaurl"], {}, "sqlite:////absolute/path.db"),
    (["migrate"], {"AGENTTASKS_DB_URL": "notaurl"}, "AGENTTASKS_DB_URL"),
    (["migrate", "--db", MISSING_PG], {}, "does not exist; create it first"),
    (["migrate", "--db", "postgresql://postgres@127.0.0.1:5432"], {}, "names no database"),
    (["team", "list", "--db", "postgresql://postgres@127.0.0.1:1/x"], {}, "Connection refused"),
    (["migrate", "--db", "sqlite:///no/such/dir/x.db"], {}, "sqlite:////abs/x.db is absolute"),
    (["team", "list", "--db", "sqlite:///no/such/dir/x.db"], {}, "no/such/dir/x.db"),
    (["serve", "--log-level", "LOUD"], {}, "--log-level must be one of DEBUG"),
    (["serve"], {"AGENTTASKS_LOG_LEVEL": "loud"}, "AGENTTASKS_LOG_LEVEL must be one of"),
    (["serve"], {"AGENTTASKS_NO_REFLECTION": "maybe"}, "AGENTTASKS_NO_REFLECTION must be"),
    (["serve"], {"AGENTTASKS_ALLOW_PRIVATE_WEBHOOKS": "2"}, "1/true/yes/on/0/false/no/off"),
    (["serve"], {"AGENTTASKS_MAX_WORKERS": "many"}, "AGENTTASKS_MAX_WORKERS must be a whole"),
    (["serve"], {"AGENTTASKS_SHUTDOWN_GRACE": "-1"}, "AGENTTASKS_SHUTDOWN_GRACE must be a number"),
    (["serve"], {"AGENTTASKS_RATE_LIMIT_TASK": "1.5"}, "AGENTTASKS_RATE_LIMIT_TASK"),
    (["serve", "--port", "99999"], {}, "--port must be a whole number from 0 to 65535"),
    (["serve", "--port", "-1"], {}, "--port must be"),
    (["serve"], {"AGENTTASKS_PORT": "70000"}, "AGENTTASKS_PORT must be a whole number from 0"),
    (["serve", "--workers", "0"], {}, "--workers must be a whole number of at least 1"),
    (["serve", "--workers", "2", "--port", "0"], {}, "--workers: more than 1 needs a fixed"),
    (["serve", "--rate-limit-other", "x"], {}, "--rate-limit-other must be"),
    (["serve", "--log-format", "xml"], {}, "--log-format must be one of text, json, not 'xml'"),
    (["serve"], {"AGENTTASKS_LOG_FORMAT": "yaml"}, "AGENTTASKS_LOG_FORMAT must be one of"),
    (["serve", "--metrics-port", "70000"], {}, "--metrics-port must be a whole number from 0"),
    (["serve"], {"AGENTTASKS_METRICS_PORT": "-5"}, "AGENTTASKS_METRICS_PORT must be a whole"),
    (["serve", "--metrics-port", "65535", "--workers", "2"], {}, "--metrics-port: N + --workers"),
    (
        ["serve", "--tls-cert", "no-such.pem", "--tls-key", "no-such.key"],
        {},
        "--tls-cert (AGENTTASKS_TLS_CERT): cannot read 'no-such.pem'",
    ),
    (["serve", "--tls-cert", ".", "--tls-key", "."], {}, "cannot read '.' (Is a directory)"),
    (["serve", "--tls-cert", "server.pem"], {}, "--tls-key (AGENTTASKS_TLS_KEY) is missing"),
    (["serve"], {"AGENTTASKS_TLS_KEY": "key.pem"}, "--tls-cert (AGENTTASKS_TLS_CERT) is missing"),
    (["team", "rotate-key", "--id", "cnosuchteam"], {}, "no team has the id 'cnosuchteam'"),
    (["team", "rotate-key", "--name", "Nobody"], {}, "no team is named 'Nobody'"),
]


@pytest.mark.parametrize(("args", "env", "says"), BAD_SETTINGS)
def test_a_bad_setting_is_one_line_and_exit_code_2(args, env, says, tmp_path):
    if "--db" not in args and "AGENTTASKS_DB_URL" not in env:
        args = [*args, "--db", f"sqlite:///{tmp_path / 'ok.db'}"]
    done = subprocess.run(
        [*AGENTTASKS, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**cli_env(), **env},
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    if args[-1] == MISSING_PG and "does not exist" not in done.stderr:
        pytest.skip("no PostgreSQL server to tell a missing database from")
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("agenttasks: ")
    assert says in done.stderr


def test_a_missing_postgres_database_is_not_created():
    import psycopg2

    try:
        admin = psycopg2.connect(POSTGRES_URL, connect_timeout=3)
    except psycopg2.OperationalError:
        pytest.skip("no PostgreSQL server")
    done = subprocess.run(
        [*AGENTTASKS, "migrate", "--db", MISSING_PG], capture_output=True, env=cli_env()
    )
    assert done.returncode == 2
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = 'agenttasks_no_such_database'")
        assert cursor.fetchall() == []
    admin.close()


def test_a_mistyped_flag_prints_the_commands_usage(tmp_path):
    done = agenttasks("serve", "--prot", "5", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("usage: agenttasks serve ")
    assert "unrecognized arguments: --prot 5" in done.stderr


def test_version_and_help(tmp_path):
    from importlib import metadata

    done = agenttasks("--version", cwd=tmp_path)
    assert done.stdout == f"agenttasks {metadata.version('agenttasks-grpc')}\n"
    help_text = " ".join(agenttasks("serve", "--help", cwd=tmp_path).stdout.split())
    for setting in ENV_SETTINGS:
        assert f"env AGENTTASKS_{setting}" in help_text, setting


# --- team list, team rotate-key ---------------------------------------------------------------


def _who(server, key: str) -> teams_pb2.WhoAmIResponse:
    with connect(f"127.0.0.1:{server.port}", key) as client:
        return client.teams.WhoAmI(teams_pb2.WhoAmIRequest())


def test_team_list_shows_every_team(database_url, world, tmp_path):
    done = agenttasks("team", "list", "--json", "--db", database_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1
    rows = json.loads(done.stdout)
    assert all(list(row) == ["teamId", "name", "createdAt"] for row in rows)
    mine = [row for row in rows if row["teamId"] == world.id]
    assert len(mine) == 1 and mine[0]["name"] == "Test team"
    assert mine[0]["createdAt"].endswith("Z")
    assert not TEAM_KEY.search(done.stdout + done.stderr)

    text = agenttasks("team", "list", "--db", database_url, cwd=tmp_path).stdout
    assert text.splitlines()[0].split() == ["ID", "NAME", "CREATED"]
    assert any(line.startswith(world.id) for line in text.splitlines())


def test_rotate_key_by_id_stops_the_old_key_within_a_second(database_url, server, world, tmp_path):
    assert _who(server, world.key).team_id == world.id
    done = agenttasks(
        "team", "rotate-key", "--id", world.id, "--json", "--db", database_url, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1
    rotated = json.loads(done.stdout)
    assert list(rotated) == ["teamId", "apiKey"] and rotated["teamId"] == world.id
    assert TEAM_KEY.fullmatch(rotated["apiKey"]) and rotated["apiKey"] != world.key
    assert _who(server, rotated["apiKey"]).team_id == world.id
    # Another process rotated it: the server honours that within its token cache's bound.
    deadline = time.monotonic() + tokens.CACHE_US / 1e6 + 0.5
    with pytest.raises(AgentTasksError) as caught:
        while time.monotonic() < deadline:
            _who(server, world.key)
            time.sleep(0.05)
    assert caught.value.code == "UNAUTHORIZED"


def test_rotate_key_by_name_prints_the_key_once(database_url, server, tmp_path):
    created = json.loads(
        agenttasks(
            "team", "create", "--name", "Unique ops", "--json", "--db", database_url, cwd=tmp_path
        ).stdout
    )
    done = agenttasks(
        "team", "rotate-key", "--name", "Unique ops", "--db", database_url, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    (key,) = TEAM_KEY.findall(done.stdout)
    assert f"Team 'Unique ops' has a new key (id {created['teamId']})" in done.stdout
    assert _who(server, key).team_id == created["teamId"]


def test_rotate_key_by_a_shared_name_asks_for_the_id(database_url, world, other_world, tmp_path):
    both = agenttasks("team", "create", "--name", "Test team", "--db", database_url, cwd=tmp_path)
    assert both.returncode == 0
    done = agenttasks(
        "team", "rotate-key", "--name", "Test team", "--db", database_url, cwd=tmp_path
    )
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert "teams are named 'Test team'" in done.stderr and "use --id" in done.stderr
    assert world.id in done.stderr and ID.search(done.stderr)
    assert _who_still_works(world)


def _who_still_works(world) -> bool:
    return world.admin.teams.WhoAmI(teams_pb2.WhoAmIRequest()).team_id == world.id
