"""Many processes sweep one PostgreSQL database: every expired lease is swept exactly once,
even when a sweeping process is killed in the middle."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from agenttasks.server.domain import agents, projects, tasks, teams
from agenttasks.server.domain.values import MICROS, Caller, TokenKind, now_us
from agenttasks.server.storage.db import write_transaction
from agenttasks.server.storage.models import Task, TaskEvent

from .fresh import fresh_database
from .test_cli import AGENTTASKS, Served, cli_env

pytestmark = pytest.mark.slow

TASKS = 1000
SPREAD_US = 5_000  # one lease runs out every 5 ms: the sweep takes about 5 s
PATIENCE = 60  # seconds anything may take (polled, not a timed assertion)


@pytest.fixture
def postgres_alone(tmp_path) -> Iterator[str]:
    with fresh_database("postgres", tmp_path) as url:
        yield url


def claimed_tasks(count: int) -> list[str]:
    """`count` tasks in progress with an hour's lease each; returns their ids."""
    team, _ = teams.create_team("Sweepers")
    caller = Caller(team.id, TokenKind.TEAM_API_KEY)
    project = projects.create_project(caller, "", "Abandoned", "", "")
    agent, _ = agents.create_agent(caller, "", "crashed", "", "")
    ids = []
    with write_transaction():
        for n in range(count):
            task = tasks.create_task(caller, "", project.id, f"task {n}")
            ids.append(tasks.claim_task(caller, task.id, agent.id, 3600 * MICROS).id)
    return ids


def swept(ids: list[str]) -> Counter[str]:
    """task id -> its lease_expired events."""
    rows = TaskEvent.select(TaskEvent.task_id).where(
        TaskEvent.task_id.in_(ids) & (TaskEvent.reason == "lease_expired")
    )
    return Counter(row.task_id for row in rows)


def wait_until(condition, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen:\n" + "\n".join(p.read_text() for p in logs))
        time.sleep(0.05)


def test_three_sweeping_processes_one_killed_expire_each_lease_once(postgres_alone, tmp_path):
    ids = claimed_tasks(TASKS)
    worker_log = tmp_path / "worker.log"
    with worker_log.open("w") as output:
        worker = subprocess.Popen(
            [*AGENTTASKS, "worker", "--db", postgres_alone],
            stdout=output,
            stderr=output,
            env=cli_env(),
        )
    try:
        with Served(tmp_path, "--db", postgres_alone, "--workers", "2") as served:
            logs = [worker_log, served.stderr_path]
            served.wait_serving()
            wait_until(
                lambda: (
                    served.stderr.count("background jobs running") == 2
                    and "background jobs running" in worker_log.read_text()
                ),
                "every process starting its jobs",
                logs,
            )
            # The leases run out one after another from now on, while all three sweep.
            start = now_us() + 100_000
            first = Task.select(Task.seq).where(Task.id.in_(ids)).order_by(Task.seq).scalar()
            Task.update(lease_expire_at=start + (Task.seq - first) * SPREAD_US).where(
                Task.id.in_(ids)
            ).execute()

            wait_until(lambda: len(swept(ids)) >= TASKS // 5, "a fifth swept", logs)
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=PATIENCE)
            assert len(swept(ids)) < TASKS, "killed after the sweep: nothing was interrupted"

            wait_until(lambda: len(swept(ids)) == TASKS, "the rest swept", logs)
            time.sleep(1.5)  # a sweeper period more: a second expiry would show now
            assert served.terminate() == 0, served.stderr
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()

    assert swept(ids) == dict.fromkeys(ids, 1)
    rows = Task.select().where(Task.id.in_(ids))
    states = Counter(
        (t.status, t.attempt_count, t.assigned_agent_id, t.lease_expire_at) for t in rows
    )
    assert states == {("todo", 1, None, None): TASKS}
