"""Fixtures: each backend (SQLite, PostgreSQL) runs the whole suite against a real server."""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest

from agenttasks.server.config import ServerConfig
from agenttasks.server.domain import teams
from agenttasks.server.ratelimit import RateLimits
from agenttasks.server.server import RunningServer, create_server
from agenttasks.server.storage import db, migrations

from .helpers import Client, TeamWorld

POSTGRES_URL = os.environ.get(
    "AGENTTASKS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
SECRET = re.compile(r"(tk|at)_[0-9a-f]{64}|whsec_[A-Za-z0-9+/=]{20,}")


def _postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh, empty database on the PostgreSQL server of `admin_url`, dropped afterwards."""
    import psycopg2

    name = f"agenttasks_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg2.connect(admin_url, connect_timeout=3)
    except psycopg2.OperationalError as error:
        if os.environ.get("AGENTTASKS_REQUIRE_POSTGRES", "").lower() not in (
            "",
            "0",
            "false",
            "no",
        ):
            pytest.fail(f"PostgreSQL required but unreachable at {admin_url}: {error}")
        pytest.skip(
            f"no PostgreSQL server reachable at {admin_url} (set AGENTTASKS_TEST_POSTGRES_URL)"
        )
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(admin_url)
    try:
        yield urlunsplit(parts._replace(path="/" + name))
    finally:
        db.close()
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request, tmp_path_factory) -> Iterator[str]:
    """The URL of a fresh, migrated database of each backend; the models are bound to it."""
    if request.param == "sqlite":
        urls = iter([f"sqlite:///{tmp_path_factory.mktemp('db')}/agenttasks.db"])
    else:
        urls = _postgres_database(POSTGRES_URL)
    url = next(urls)
    db.open_database(url)
    migrations.migrate()
    yield url
    db.close()
    next(urls, None)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database of its own (not migrated, models not bound)."""
    yield from _postgres_database(POSTGRES_URL)


def start_server(limiter=None, **overrides) -> RunningServer:
    config = ServerConfig(host="127.0.0.1", port=0, **overrides)
    return create_server(config, limiter)


@pytest.fixture(scope="session")
def server(database_url) -> Iterator[RunningServer]:
    # Limits off: the suite makes many calls from one address; rate-limit tests start
    # servers of their own.
    running = start_server(rate_limits=RateLimits(0, 0, 0))
    yield running
    running.stop(0)


@pytest.fixture(scope="session")
def channel(server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


@pytest.fixture
def backend(database_url) -> str:
    return "postgres" if database_url.startswith("postgres") else "sqlite"


def new_team(channel: grpc.Channel, name: str = "Test team") -> TeamWorld:
    team, key = teams.create_team(name)
    return TeamWorld(id=team.id, key=key, admin=Client(channel, key), channel=channel)


@pytest.fixture
def world(channel) -> TeamWorld:
    """A fresh team: tests stay independent because everything is scoped to a team."""
    return new_team(channel)


@pytest.fixture
def other_world(channel) -> TeamWorld:
    return new_team(channel, "Other team")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(logging.Formatter().format(record))


@pytest.fixture(autouse=True)
def no_secrets_in_logs() -> Iterator[None]:
    """Every test: nothing logged (at any level, tracebacks included) contains a secret."""
    root = logging.getLogger()
    handler = _Collect()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
    leaked = [text for text in handler.texts if SECRET.search(text)]
    assert not leaked, f"secrets in logs: {leaked[:3]}"
