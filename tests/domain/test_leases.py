"""The lease sweeper without gRPC or sleeps: each test hands it the time it sweeps at."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

from agenttasks.server.domain import agents, leases, projects, tasks, teams
from agenttasks.server.domain.values import MICROS, Caller, TokenKind
from agenttasks.server.storage.models import Task, TaskEvent

LEASE_US = 60 * MICROS


@dataclass
class Board:
    caller: Caller
    project_id: str
    agent_id: str

    def task(self, max_attempts: int = 0) -> Task:
        return tasks.create_task(
            self.caller, "", self.project_id, "leased work", max_attempts=max_attempts
        )

    def claimed(self, max_attempts: int = 0, lease_us: int | None = LEASE_US) -> Task:
        task = self.task(max_attempts)
        return tasks.claim_task(self.caller, task.id, self.agent_id, lease_us)


def new_board() -> Board:
    team, _ = teams.create_team("Leases")
    caller = Caller(team.id, TokenKind.TEAM_API_KEY)
    project = projects.create_project(caller, "", "Leases", "", "")
    agent, _ = agents.create_agent(caller, "", "runner", "", "")
    return Board(caller, project.id, agent.id)


def reload(task: Task) -> Task:
    return Task.get(Task.id == task.id)


def events_of(task: Task) -> list[tuple[str, str, str | None]]:
    rows = TaskEvent.select().where(TaskEvent.task_id == task.id).order_by(TaskEvent.event_id)
    return [(row.event, row.reason, row.agent_id) for row in rows]


def test_a_lease_that_ran_out_returns_the_task_to_todo(database_url):
    board = new_board()
    task = board.claimed()
    expire_at = task.lease_expire_at
    assert expire_at is not None

    leases.expire_due_leases(expire_at - 1)
    assert reload(task).status == "in_progress"

    assert leases.expire_due_leases(expire_at) >= 1
    swept = reload(task)
    assert (swept.status, swept.assigned_agent_id) == ("todo", None)
    assert (swept.lease_expire_at, swept.lease_us) == (None, None)
    assert swept.attempt_count == 1
    assert swept.version == task.version + 1  # a new etag
    assert events_of(task)[-1] == ("task.moved", "lease_expired", None)
    assert [e for e in events_of(task) if e[1] == "lease_expired"] == [
        ("task.moved", "lease_expired", None)
    ]

    seen = events_of(task)
    leases.expire_due_leases(expire_at + LEASE_US)  # nothing more happens to it
    assert events_of(task) == seen
    assert reload(task).version == swept.version


def test_the_last_allowed_attempt_cancels_the_task(database_url):
    board = new_board()
    task = board.claimed(max_attempts=2)
    assert task.lease_expire_at is not None
    leases.expire_due_leases(task.lease_expire_at)
    assert (reload(task).status, reload(task).attempt_count) == ("todo", 1)

    again = tasks.claim_task(board.caller, task.id, board.agent_id, LEASE_US)
    assert again.lease_expire_at is not None
    leases.expire_due_leases(again.lease_expire_at)
    cancelled = reload(task)
    assert (cancelled.status, cancelled.assigned_agent_id) == ("cancelled", None)
    assert cancelled.attempt_count == 2
    assert events_of(task)[-2:] == [
        ("task.moved", "max_attempts_exceeded", None),
        ("task.cancelled", "max_attempts_exceeded", None),
    ]


def test_one_allowed_attempt_cancels_at_the_first_expiry(database_url):
    task = new_board().claimed(max_attempts=1)
    assert task.lease_expire_at is not None
    leases.expire_due_leases(task.lease_expire_at)
    assert (reload(task).status, reload(task).attempt_count) == ("cancelled", 1)


def test_renewed_completed_and_unleased_tasks_are_left_alone(database_url):
    board = new_board()
    renewed = board.claimed()
    completed = board.claimed()
    unleased = board.claimed(lease_us=None)
    assert renewed.lease_expire_at is not None and unleased.lease_expire_at is None
    sweep_at = renewed.lease_expire_at + 1
    # What HeartbeatTask does to the row: the lease now ends after the sweep.
    Task.update(lease_expire_at=sweep_at + LEASE_US).where(Task.id == renewed.id).execute()
    tasks.complete_task(board.caller, completed.id, "done")
    before = {t.id: len(events_of(t)) for t in (renewed, completed, unleased)}

    leases.expire_due_leases(sweep_at + 1)

    assert reload(renewed).status == "in_progress"
    assert reload(renewed).assigned_agent_id == board.agent_id
    assert reload(completed).status == "done"
    assert reload(unleased).status == "in_progress"
    assert {t.id: len(events_of(t)) for t in (renewed, completed, unleased)} == before


def test_two_sweepers_expire_each_of_200_leases_exactly_once(database_url):
    board = new_board()
    claimed = [board.claimed() for _ in range(200)]
    sweep_at = max(t.lease_expire_at or 0 for t in claimed)
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def sweep() -> None:
        try:
            start.wait()
            while leases.expire_due_leases(sweep_at, limit=10):
                pass
        except BaseException as error:  # reported below: a thread's failure must fail the test
            errors.append(error)

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors

    ids = [t.id for t in claimed]
    expired = Counter(
        row.task_id
        for row in TaskEvent.select(TaskEvent.task_id).where(
            TaskEvent.task_id.in_(ids) & (TaskEvent.reason == "lease_expired")
        )
    )
    assert expired == dict.fromkeys(ids, 1)
    rows = Task.select().where(Task.id.in_(ids))
    assert {(t.status, t.attempt_count, t.assigned_agent_id) for t in rows} == {("todo", 1, None)}
