"""Database connections: a bounded PostgreSQL pool per process, each call's connection given
back when the call ends; SQLite keeps one connection per thread."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import peewee
import pytest

from agenttasks.server.config import ServerConfig
from agenttasks.server.connections import pool_size
from agenttasks.server.storage import db
from agenttasks.server.webhooks.dispatcher import SENDERS
from agenttasks.server.workers import default_jobs
from agenttasks.server.workers.jobs import connections_needed
from agenttasks.v1 import projects_pb2, tasks_pb2

from .conftest import POSTGRES_URL
from .fresh import fresh_database
from .helpers import Client
from .test_cli import TEAM_KEY, Served
from .test_operations import _admin

MAX_WORKERS = 4
# What the README states for `serve --no-workers`: --max-workers, plus the main thread's.
BOUND = MAX_WORKERS + 1
CONCURRENT_CALLS = 8 * BOUND


def test_the_pool_has_one_connection_per_thread_that_can_touch_the_database():
    assert pool_size(ServerConfig(max_workers=MAX_WORKERS, run_workers=False), serving=True) == (
        BOUND
    )
    # The defaults: 32 call threads, 3 job threads, 16 webhook senders, the main thread.
    assert pool_size(ServerConfig(), serving=True) == 52
    assert pool_size(ServerConfig(), serving=False) == 20  # agenttasks worker
    for config in (ServerConfig(), ServerConfig(event_retention=0)):
        assert connections_needed(config) == len(default_jobs(config)) + SENDERS


def test_a_unit_of_work_gives_its_postgresql_connection_back_sqlite_keeps_its_own(
    backend, tmp_path
):
    with fresh_database(backend, tmp_path):
        with db.connected():
            first = db.database.connection()
            db.database.execute_sql("SELECT 1")
        # PostgreSQL: back in the pool, and handed out again (not a new one) next time.
        # SQLite: still this thread's, open, with no close and reopen per call.
        assert db.database.is_closed() == (backend == "postgres")
        with db.connected():
            assert db.database.connection() is first
            db.database.execute_sql("SELECT 1")


def test_a_connection_that_failed_is_dropped_not_given_back(backend, tmp_path):
    with fresh_database(backend, tmp_path):
        with pytest.raises(peewee.OperationalError), db.connected():
            failed = db.database.connection()
            raise peewee.OperationalError("the server went away")
        assert db.database.is_closed()
        with db.connected():
            assert db.database.connection() is not failed
            db.database.execute_sql("SELECT 1")


class _Backends:
    """Samples the server's backends (pg_stat_activity of its database) in a thread."""

    def __init__(self, name: str) -> None:
        import psycopg2

        self.name = name
        self._admin = psycopg2.connect(POSTGRES_URL, connect_timeout=5)
        self._admin.autocommit = True
        self.most = 0
        self.pids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def now(self) -> set[int]:
        with self._admin.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.name,),
            )
            return {pid for (pid,) in cursor.fetchall()}

    def kill_all(self) -> None:
        with self._admin.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.name,),
            )

    def wait_gone(self, pids: set[int], within: float = 10.0) -> None:
        deadline = time.monotonic() + within
        while pids & self.now():
            assert time.monotonic() < deadline, "terminated backends did not go away"
            time.sleep(0.02)

    def _sample(self) -> None:
        while not self._stop.is_set():
            pids = self.now()
            self.most = max(self.most, len(pids))
            self.pids |= pids
            time.sleep(0.005)

    def __enter__(self) -> _Backends:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.pids |= self.now()
        self.close()

    def close(self) -> None:
        self._admin.close()


def _serve(tmp_path, url: str) -> Served:
    limits_off = ("--rate-limit-task", "0", "--rate-limit-other", "0")
    return Served(
        tmp_path, "--db", url, "--no-workers", "--max-workers", str(MAX_WORKERS), *limits_off
    )


def _world(served: Served) -> tuple[Client, str]:
    served.wait_serving()
    (key,) = TEAM_KEY.findall(served.stderr)
    client = served.client(key)
    project = client.projects.CreateProject(projects_pb2.CreateProjectRequest(name="p")).project
    return client, project.id


def _call(client: Client, project_id: str) -> None:
    """Two calls: a write, then a read of what it wrote."""
    created = client.tasks.CreateTask(
        tasks_pb2.CreateTaskRequest(project_id=project_id, title="t"), timeout=30
    ).task
    client.tasks.GetTask(tasks_pb2.GetTaskRequest(task_id=created.id), timeout=30)


def _load(client: Client, project_id: str, rounds: int, tolerate_failures: bool = False) -> int:
    """`rounds` of _call, CONCURRENT_CALLS at a time; returns how many failed."""

    def one(_: int) -> bool:
        try:
            _call(client, project_id)
            return True
        except grpc.RpcError:
            if not tolerate_failures:
                raise
            return False

    with ThreadPoolExecutor(CONCURRENT_CALLS) as pool:
        return sum(not ok for ok in pool.map(one, range(rounds)))


def test_a_server_holds_at_most_its_bound_of_connections_and_reuses_them(tmp_path, postgres_url):
    name = postgres_url.rsplit("/", 1)[1]
    with _serve(tmp_path, postgres_url) as served:
        client, project_id = _world(served)
        with _Backends(name) as backends:
            _load(client, project_id, rounds=30 * BOUND)  # 300 calls, 40 at a time
        assert 0 < backends.most <= BOUND, backends.most
        # The calls shared the same few connections: one per call would show 300 backends.
        assert len(backends.pids) <= BOUND, sorted(backends.pids)
        assert served.terminate() == 0


def test_calls_recover_when_connections_are_killed_or_the_database_restarts(tmp_path, postgres_url):
    name = postgres_url.rsplit("/", 1)[1]
    with _serve(tmp_path, postgres_url) as served:
        client, project_id = _world(served)
        backends = _Backends(name)
        _load(client, project_id, rounds=4 * BOUND)
        # Killed while idle in the pool: noticed before they are handed out, no call fails.
        idle = backends.now()
        assert idle
        backends.kill_all()
        backends.wait_gone(idle)
        for _ in range(2 * BOUND):
            _call(client, project_id)

        # Killed again and again under load: calls in flight may fail, and those broken
        # connections leave the pool (were they counted still, the pool would run dry).
        loading = threading.Thread(
            target=_load, args=(client, project_id, 20 * BOUND, True), daemon=True
        )
        loading.start()
        for _ in range(3 * BOUND):
            killed = backends.now()
            backends.kill_all()
            time.sleep(0.1)
        loading.join(120)
        assert not loading.is_alive()
        backends.wait_gone(killed)
        for _ in range(2 * BOUND):
            _call(client, project_id)
        assert len(backends.now()) <= BOUND

        # A restart: no connection survives, and none can be made for a while.
        _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            backends.kill_all()
            backends.wait_gone(backends.now())
            with pytest.raises(grpc.RpcError):
                _call(client, project_id)
        finally:
            _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        for _ in range(2 * BOUND):  # back at once: the next call connects afresh
            _call(client, project_id)
        assert len(backends.now()) <= BOUND
        backends.close()
        assert served.terminate() == 0
