"""Rate limits hold per token across the processes of `serve --workers 2` on PostgreSQL."""

from __future__ import annotations

import json
import time

import grpc
import pytest

from agenttasks.v1 import tasks_pb2

from .conftest import POSTGRES_URL, _postgres_database
from .helpers import Client, error_body
from .test_cli import Served, agenttasks

pytestmark = pytest.mark.slow

TASK_LIMIT = 120  # the default, per token per minute
TOLERANCE = 0.10  # stated in the README


def test_one_token_gets_its_limit_across_two_processes_and_many_connections(tmp_path):
    databases = _postgres_database(POSTGRES_URL)
    url = next(databases)
    try:
        made = agenttasks(
            "team", "create", "--name", "Limited", "--json", "--db", url, cwd=tmp_path
        )
        assert made.returncode == 0, made.stderr
        key = json.loads(made.stdout)["apiKey"]
        with Served(tmp_path, "--db", url, "--workers", "2", "--no-workers") as served:
            served.wait_serving()
            started = time.monotonic()
            admitted = refused = 0
            for _ in range(20):  # a new connection every 10 calls: the kernel spreads them
                with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
                    tasks = Client(channel, key).tasks
                    for _ in range(10):
                        try:
                            tasks.ListTasks(tasks_pb2.ListTasksRequest(), timeout=10)
                            admitted += 1
                        except grpc.RpcError as error:
                            assert error_body(error).code == "RATE_LIMITED"
                            refused += 1
            elapsed = time.monotonic() - started
    finally:
        next(databases, None)
    refill = elapsed * TASK_LIMIT / 60
    print(f"admitted {admitted}, refused {refused} in {elapsed:.1f} s")
    assert admitted + refused == 200
    assert admitted <= TASK_LIMIT * (1 + TOLERANCE) + refill
    assert admitted >= TASK_LIMIT * (1 - TOLERANCE)
