"""Webhook dispatch by real server processes: exactly once across two of them on PostgreSQL,
and every event delivered after a dispatching server is killed with SIGKILL."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from agenttasks.server.domain import projects, tasks, teams, webhooks
from agenttasks.server.domain.values import Caller, TokenKind
from agenttasks.server.storage.db import write_transaction

from .fresh import fresh_database
from .test_cli import Served
from .webhook_receiver import Receiver

pytestmark = pytest.mark.slow

PATIENCE = 90  # seconds anything may take (polled, not a timed assertion)


@pytest.fixture(params=["sqlite", "postgres"])
def alone(request, tmp_path) -> Iterator[str]:
    with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def postgres_alone(tmp_path) -> Iterator[str]:
    with fresh_database("postgres", tmp_path) as url:
        yield url


def hooked_team(url: str) -> tuple[Caller, str]:
    """A team with one webhook to `url` and a project; returns its caller and project id."""
    team, _ = teams.create_team("Hooked")
    caller = Caller(team.id, TokenKind.TEAM_API_KEY)
    webhooks.create_webhook(caller, "", url, [], "", "", allow_private=True)
    return caller, projects.create_project(caller, "", "Work", "", "").id


def create_tasks(caller: Caller, project_id: str, count: int, per_transaction: int = 50) -> None:
    for start in range(0, count, per_transaction):
        with write_transaction():
            for n in range(start, min(count, start + per_transaction)):
                tasks.create_task(caller, "", project_id, f"task {n}")


def titles(receiver: Receiver) -> set[str]:
    return {json.loads(r.body)["data"]["task"]["title"] for r in receiver.received()}


def wait_until(condition, what: str, *served: Served) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > deadline:
            logs = "\n".join(s.stderr[-3000:] for s in served)
            pytest.fail(f"{what} did not happen:\n{logs}")
        time.sleep(0.05)


def test_two_servers_deliver_each_of_500_events_exactly_once(postgres_alone, tmp_path):
    receiver = Receiver()
    try:
        caller, project_id = hooked_team(receiver.url)
        with (
            Served(tmp_path, "--db", postgres_alone, "--allow-private-webhooks") as one,
            Served(tmp_path, "--db", postgres_alone, "--allow-private-webhooks") as two,
        ):
            one.wait_serving()
            two.wait_serving()
            create_tasks(caller, project_id, 500)
            wait_until(lambda: len(titles(receiver)) == 500, "500 events delivered", one, two)
            time.sleep(1.5)  # a second delivery of any of them would show now
            assert one.terminate() == 0 and two.terminate() == 0
        sent = Counter(r.headers["x-agenttasks-delivery"] for r in receiver.received())
        assert len(sent) == 500 and set(sent.values()) == {1}
    finally:
        receiver.close()


def test_every_event_is_delivered_after_the_server_is_killed(alone, tmp_path):
    receiver = Receiver(lambda _: time.sleep(0.01) or 200)
    try:
        caller, project_id = hooked_team(receiver.url)
        first = Served(tmp_path, "--db", alone, "--allow-private-webhooks")
        with first:
            first.wait_serving()
            create_tasks(caller, project_id, 300)
            wait_until(lambda: len(receiver.received()) >= 20, "deliveries starting", first)
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(timeout=PATIENCE)
        assert len(titles(receiver)) < 300, "killed too late: nothing was pending"
        with Served(tmp_path, "--db", alone, "--allow-private-webhooks") as second:
            second.wait_serving()
            # Deliveries the killed server held come back when their lease runs out (30 s).
            wait_until(lambda: len(titles(receiver)) == 300, "every event delivered", second)
            assert second.terminate() == 0
    finally:
        receiver.close()
