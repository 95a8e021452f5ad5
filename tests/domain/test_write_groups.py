"""Writes on the event loop commit in groups (dbwork, storage.db.run_without_waiting).

Works that run while a group is open write into its one transaction, each in a savepoint,
and are answered only once it committed: nobody hears of a write, or of a read of one, that
could still be undone. A failing work undoes only its own writes; a group whose commit
fails is undone whole and its works run again on the pool. Calls one at a time commit at
once; overlapping ones wait a few milliseconds for company.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from concurrent import futures

import peewee
import pytest

from agenttasks.server import dbwork
from agenttasks.server.domain import projects, tasks, teams
from agenttasks.server.domain.errors import NotFound
from agenttasks.server.domain.values import Caller, TokenKind
from agenttasks.server.storage import db
from agenttasks.server.storage.models import Task

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def made(database_url):
    team, _ = teams.create_team("Groups")
    caller = Caller(team.id, TokenKind.TEAM_API_KEY)
    return caller, projects.create_project(caller, "", "P", "", "")


@pytest.fixture
def commits(monkeypatch) -> Iterator[list[str]]:
    """Every group commit, in order, as "commit" in the list (tests add their own marks)."""
    seen: list[str] = []
    real = db.commit_group

    def counted(group: db.WriteGroup) -> None:
        real(group)
        seen.append("commit")

    monkeypatch.setattr(db, "commit_group", counted)
    yield seen


def run(scenario) -> None:
    """Runs `scenario(work)` on an event loop of this thread, as the server runs calls."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with futures.ThreadPoolExecutor(2) as pool:
            await scenario(dbwork.DatabaseWork(loop, dbwork.DatabaseExecutor(pool), on_loop=True))

    asyncio.run(main())


def titles(project) -> list[str]:
    return sorted(task.title for task in Task.select().where(Task.project == project.id))


def test_overlapping_writes_commit_once_and_are_answered_after_it(made, commits):
    caller, project = made

    async def scenario(work):
        async def create(title: str) -> None:
            await work.run(tasks.create_task, caller, "", project.id, title)
            commits.append(f"answered {title}")

        await asyncio.gather(*(create(f"t{n}") for n in range(5)))

    run(scenario)

    assert commits[0] == "commit" and commits.count("commit") == 1
    assert sorted(commits[1:]) == [f"answered t{n}" for n in range(5)]
    assert titles(project) == [f"t{n}" for n in range(5)]


def test_a_read_of_a_write_not_yet_committed_is_answered_after_the_commit(
    made, commits, database_url
):
    caller, project = made
    other = sqlite3.connect(database_url.removeprefix("sqlite:///"))  # as another process
    count = "SELECT count(*) FROM task WHERE project_id = ?"

    async def scenario(work):
        creating = asyncio.ensure_future(
            work.run(tasks.create_task, caller, "", project.id, "seen")
        )
        await asyncio.sleep(0)  # the create has run: its group is open, not yet committed
        task_id = Task.get(Task.title == "seen").id  # this connection sees into the group
        assert other.execute(count, (project.id,)).fetchone() == (0,)

        found = await work.run(tasks.get_task, caller, task_id)
        commits.append("read answered")

        assert found.title == "seen"
        await creating

    run(scenario)

    assert commits.index("commit") < commits.index("read answered")
    assert other.execute(count, (project.id,)).fetchone() == (1,)
    other.close()


def test_a_failing_work_undoes_only_its_own_writes(made, commits):
    caller, project = made

    async def scenario(work):
        outcomes = await asyncio.gather(
            work.run(tasks.create_task, caller, "", project.id, "kept"),
            work.run(tasks.create_task, caller, "", "cnosuchproject", "refused"),
            work.run(tasks.create_task, caller, "", project.id, "also kept"),
            return_exceptions=True,
        )
        assert isinstance(outcomes[1], NotFound)

    run(scenario)

    assert commits.count("commit") == 1
    assert titles(project) == ["also kept", "kept"]


def test_a_group_that_fails_to_commit_is_undone_and_its_works_run_again(made, monkeypatch):
    caller, project = made
    real = db.commit_group
    failures = []

    def fails_once(group: db.WriteGroup) -> None:
        if not failures:
            failures.append(group)
            db._abandon_group()  # as a failed COMMIT leaves it: rolled back, lock released
            raise peewee.OperationalError("disk I/O error")
        real(group)

    monkeypatch.setattr(db, "commit_group", fails_once)

    async def scenario(work):
        made = await asyncio.gather(
            *(work.run(tasks.create_task, caller, "", project.id, f"t{n}") for n in range(3))
        )
        assert sorted(task.title for task in made) == ["t0", "t1", "t2"]

    run(scenario)

    assert len(failures) == 1
    assert titles(project) == ["t0", "t1", "t2"]  # each once: undone, then written again
    assert not db.in_write_transaction() and db.open_group() is None


def test_calls_one_at_a_time_commit_at_once_and_overlapping_ones_wait_for_company(
    made, commits, monkeypatch
):
    caller, project = made
    monkeypatch.setattr(dbwork, "GROUP_WINDOW_S", 0.05)

    async def scenario(work):
        for n in range(3):  # one at a time: a group each, none kept open for the window
            await work.run(tasks.create_task, caller, "", project.id, f"alone {n}")
            assert not work.calls_overlap
        await asyncio.gather(
            *(
                work.run(tasks.create_task, caller, "", project.id, f"together {n}")
                for n in range(2)
            )
        )
        assert work.calls_overlap  # so the next group waits for the window
        await work.run(tasks.create_task, caller, "", project.id, "alone again")
        assert not work.calls_overlap  # nobody came: the next one commits at once again

    run(scenario)

    assert commits.count("commit") == 5
    assert len(titles(project)) == 6


def test_a_group_still_open_when_the_server_stops_is_committed(made, monkeypatch):
    caller, project = made
    monkeypatch.setattr(dbwork, "GROUP_WINDOW_S", 60.0)

    async def scenario(work):
        work.calls_overlap = True  # the group waits for company, longer than the loop runs
        call = asyncio.ensure_future(work.run(tasks.create_task, caller, "", project.id, "late"))
        await asyncio.sleep(0)  # it ran: the group is open
        call.cancel()  # server.stop(0) cancels the calls in flight
        work.finish()  # what RunningServer does before its loop stops

        assert db.open_group() is None

    run(scenario)

    assert titles(project) == ["late"]
    with db.write_transaction():  # the write lock was given back
        pass
