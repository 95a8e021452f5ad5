"""Operating `agenttasks serve`: one server per port, and health that follows the database."""

from __future__ import annotations

import subprocess
import time
import urllib.request

import pytest
from grpc_health.v1 import health_pb2

from agenttasks.server.config import ConfigError, ServerConfig
from agenttasks.server.server import create_server
from agenttasks.v1 import teams_pb2

from .conftest import POSTGRES_URL, start_server
from .test_cli import AGENTTASKS, START_TIMEOUT, TEAM_KEY, Served, cli_env, free_port

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_second_server_on_a_busy_port_exits_2_and_the_first_keeps_every_call(tmp_path, workers):
    with Served(tmp_path, "--db", "sqlite:///first.db", "--no-workers") as first:
        first.wait_serving()
        (key,) = TEAM_KEY.findall(first.stderr)
        team_id = first.client(key).teams.WhoAmI(teams_pb2.WhoAmIRequest()).team_id
        second = subprocess.run(
            [
                *AGENTTASKS,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(first.port),
                "--workers",
                workers,
                "--db",
                "sqlite:///second.db",
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=cli_env(),
            timeout=60,
        )
        assert second.returncode == 2
        assert second.stderr == (
            f"agenttasks: port {first.port} is already in use (--port / AGENTTASKS_PORT)\n"
        )
        client = first.client(key)
        answers = [client.teams.WhoAmI(teams_pb2.WhoAmIRequest()).team_id for _ in range(20)]
        assert answers == [team_id] * 20


def _admin(sql: str) -> None:
    import psycopg2

    connection = psycopg2.connect(POSTGRES_URL, connect_timeout=5)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
    finally:
        connection.close()


def _wait_health(served: Served, wanted: int, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while served.health() != wanted:
        assert time.monotonic() < deadline, f"health never became {wanted}:\n{served.stderr}"
        time.sleep(0.2)


def test_health_follows_the_database(tmp_path, postgres_url):
    name = postgres_url.rsplit("/", 1)[1]
    with Served(tmp_path, "--db", postgres_url, "--no-workers") as served:
        served.wait_serving()
        _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        _admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        _wait_health(served, NOT_SERVING)
        assert served.health("agenttasks.v1.TaskService") == NOT_SERVING
        _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        _wait_health(served, SERVING)
        assert served.health("agenttasks.v1.TaskService") == SERVING
        assert "database does not answer: health NOT_SERVING" in served.stderr


def test_a_lone_server_does_not_share_its_port(database_url):
    running = start_server()
    try:
        with pytest.raises(ConfigError, match=f"port {running.port} is already in use"):
            create_server(ServerConfig(host="127.0.0.1", port=running.port))
    finally:
        running.stop(0)


def test_each_worker_process_serves_metrics_on_its_own_port(tmp_path):
    metrics_port = free_port()
    with Served(
        tmp_path, "--db", "sqlite:///w.db", "--workers", "2", "--metrics-port", str(metrics_port)
    ) as served:
        served.wait_serving()
        for port in (metrics_port, metrics_port + 1):
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as answer:
                        assert b"agenttasks_tasks{" in answer.read()
                    break
                except OSError:
                    assert time.monotonic() < deadline, served.stderr
                    time.sleep(0.1)
        assert served.terminate() == 0
