"""`agenttasks worker` and `serve --no-workers` as users run them: processes on a database."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agenttasks.server.domain import agents, projects, tasks, teams
from agenttasks.server.domain.values import Caller, TokenKind
from agenttasks.server.storage.models import Task

from .fresh import fresh_database
from .test_cli import AGENTTASKS, Served, cli_env

SWEPT_WITHIN = 30  # seconds a started sweeper gets (polled, not a timed assertion)


@pytest.fixture
def alone(backend, tmp_path) -> Iterator[str]:
    """A database of its own: the processes sweep every expired lease they find."""
    with fresh_database(backend, tmp_path) as url:
        yield url


def expired_task() -> str:
    """A task in progress whose lease (1 µs) has already run out; returns its id."""
    team, _ = teams.create_team("Sweep")
    caller = Caller(team.id, TokenKind.TEAM_API_KEY)
    project = projects.create_project(caller, "", "Sweep", "", "")
    agent, _ = agents.create_agent(caller, "", "gone", "", "")
    task = tasks.create_task(caller, "", project.id, "abandoned")
    return tasks.claim_task(caller, task.id, agent.id, 1).id


def status_of(task_id: str) -> str:
    return Task.select(Task.status).where(Task.id == task_id).scalar()


def wait_for_todo(task_id: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SWEPT_WITHIN
    while status_of(task_id) != "todo":
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"not swept:\n{log.read_text()}"
        time.sleep(0.1)


def test_worker_sweeps_and_exits_0_on_sigterm(alone, tmp_path):
    task_id = expired_task()
    log = tmp_path / "worker.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [*AGENTTASKS, "worker", "--db", alone], stdout=output, stderr=output, env=cli_env()
        )
    try:
        wait_for_todo(task_id, process, log)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
        assert "Traceback" not in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_no_workers_does_not_sweep_and_serve_does(alone, tmp_path):
    task_id = expired_task()
    with Served(tmp_path, "--db", alone, "--no-workers") as served:
        served.wait_serving()
        time.sleep(2.5)  # two and a half sweeper periods: a sweeper would have run by now
        assert status_of(task_id) == "in_progress"
        assert served.terminate() == 0
    with Served(tmp_path, "--db", alone) as served:
        served.wait_serving()
        wait_for_todo(task_id, served.process, served.stderr_path)
        assert served.terminate() == 0
