"""SIGKILL under load: every call the server acknowledged is in the database as acknowledged."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agenttasks.server.storage.models import Task
from agenttasks.v1 import tasks_pb2

from .conftest import new_team
from .helpers import Client
from .test_task_races import free_port

pytestmark = pytest.mark.slow
ROUNDS = 5


def _serve(database_url: str, port: int, log: Path) -> subprocess.Popen:
    script = Path(sys.executable).with_name("agenttasks")
    command = [
        *([str(script)] if script.exists() else [sys.executable, "-m", "agenttasks.server.cli"]),
        "serve",
        *("--host", "127.0.0.1", "--port", str(port), "--db", database_url),
        *("--rate-limit-task", "0", "--rate-limit-other", "0", "--rate-limit-auth-failures", "0"),
        *("--log-level", "WARNING"),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTTASKS_")}
    with log.open("a") as output:
        process = subprocess.Popen(command, stdout=output, stderr=output, env=env)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(600):
            assert process.poll() is None, log.read_text()
            try:
                health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                return process
            except grpc.RpcError:
                time.sleep(0.1)
    pytest.fail(f"the server did not come up:\n{log.read_text()}")


def _load(target: str, key: str, token: str, agent_id: str, project_id: str, acked, stop):
    """Creates, claims and completes until the server dies; records each acknowledged step."""
    with grpc.insecure_channel(target) as channel:
        admin, agent = Client(channel, key), Client(channel, token)
        while not stop.is_set():
            try:
                task = admin.tasks.CreateTask(
                    tasks_pb2.CreateTaskRequest(project_id=project_id, title="crash"), timeout=5
                ).task
                acked[task.id] = "todo"
                agent.tasks.ClaimTask(tasks_pb2.ClaimTaskRequest(task_id=task.id), timeout=5)
                acked[task.id] = "in_progress"
                agent.tasks.CompleteTask(
                    tasks_pb2.CompleteTaskRequest(task_id=task.id, result=task.id), timeout=5
                )
                acked[task.id] = "done"
            except grpc.RpcError:
                return


ORDER = {"todo": 0, "in_progress": 1, "done": 2}


def test_acknowledged_calls_survive_sigkill(database_url, tmp_path):
    port = free_port()
    target = f"127.0.0.1:{port}"
    log = tmp_path / "server.log"
    process = _serve(database_url, port, log)
    try:
        with grpc.insecure_channel(target) as channel:
            world = new_team(channel, "crash")
            project = world.project()
            agents = [world.agent(f"a{n}") for n in range(4)]
        for _ in range(ROUNDS):
            acked: dict[str, str] = {}
            stop = threading.Event()
            threads = [
                threading.Thread(
                    target=_load,
                    args=(target, world.key, client.token, agent.id, project.id, acked, stop),
                )
                for agent, client in agents
            ]
            for thread in threads:
                thread.start()
            time.sleep(random.uniform(0.3, 1.5))
            process.send_signal(signal.SIGKILL)
            process.wait()
            stop.set()
            for thread in threads:
                thread.join()
            process = _serve(database_url, port, log)
            stored = {t.id: t for t in Task.select().where(Task.id.in_(list(acked)))}
            assert acked, "the load made no call before the kill"
            for task_id, status in acked.items():
                assert task_id in stored, task_id
                assert ORDER[stored[task_id].status] >= ORDER[status], (task_id, status)
                if status == "done":
                    assert stored[task_id].result == task_id
    finally:
        process.kill()
        process.wait()
