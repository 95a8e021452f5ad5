"""The work queue's acceptance across `agenttasks serve` processes (each runs the sweeper):
leases lost and kept in real time, 32 claimers over two servers, waits woken from either
process, and a WatchTasks resume after events written on both."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from agenttasks.server.domain import teams
from agenttasks.server.storage.models import Task, TaskEvent
from agenttasks.v1 import agents_pb2, projects_pb2
from agenttasks.v1 import tasks_pb2 as pb

from .fresh import fresh_database
from .helpers import Client, raises
from .test_cli import Served, cli_env
from .test_queue import claim, heartbeat, seconds

pytestmark = pytest.mark.slow

NO_LIMITS = ("--rate-limit-task", "0", "--rate-limit-other", "0")
HIGH, NORMAL, LOW = pb.TASK_PRIORITY_HIGH, pb.TASK_PRIORITY_NORMAL, pb.TASK_PRIORITY_LOW


@dataclass
class Team:
    id: str
    key: str
    project_id: str
    agents: list[tuple[str, str]]  # (id, token)


def new_team(served: Served, agents: int) -> Team:
    made, key = teams.create_team("Queue")
    admin = served.client(key)
    project = admin.projects.CreateProject(projects_pb2.CreateProjectRequest(name="Q")).project
    tokens = []
    for n in range(agents):
        answer = admin.agents.CreateAgent(agents_pb2.CreateAgentRequest(name=f"agent {n}"))
        tokens.append((answer.agent.id, answer.token))
    return Team(made.id, key, project.id, tokens)


def row(task_id: str) -> Task:
    return Task.get(Task.id == task_id)


@pytest.fixture
def alone(backend, tmp_path) -> Iterator[str]:
    with fresh_database(backend, tmp_path) as url:
        yield url


@pytest.fixture
def postgres(tmp_path) -> Iterator[str]:
    with fresh_database("postgres", tmp_path) as url:
        yield url


# --- leases in real time -------------------------------------------------------------------


def test_a_silent_holder_loses_its_task_within_3_s_and_heartbeats_keep_one(alone, tmp_path):
    with Served(tmp_path, "--db", alone, *NO_LIMITS) as served:
        served.wait_serving()
        team = new_team(served, 2)
        admin = served.client(team.key)
        alice, bob = (served.client(token) for _, token in team.agents)

        def create(**fields) -> pb.Task:
            request = pb.CreateTaskRequest(project_id=team.project_id, title="work", **fields)
            return admin.tasks.CreateTask(request).task

        silent, kept = create(), create()
        start = time.monotonic()
        claim(alice, silent.id, lease=2)
        claim(alice, kept.id, lease=2)
        lost_after = None
        beat_at = 0.0
        while (now := time.monotonic() - start) < 6.5:  # more than 3 lease lengths
            if now - beat_at >= 0.5:
                heartbeat(alice, kept.id, progress=f"{now:.1f} s")
                beat_at = now
            if lost_after is None and row(silent.id).status == "todo":
                lost_after = now  # the sweeper's write, in the database
            assert row(kept.id).status == "in_progress"
            time.sleep(0.05)

        times = {
            e.event: e.created_at for e in TaskEvent.select().where(TaskEvent.task_id == silent.id)
        }
        swept_after = (times["task.moved"] - times["task.claimed"]) / 1e6  # the server's clock
        print(f"\nsilent holder lost its task {swept_after:.2f} s after its claim (lease 2 s);")
        print(f"this test saw it {lost_after} s after sending the claim")
        assert swept_after < 3.0
        assert lost_after is not None and lost_after < 4.0  # polled, on a busy machine
        taken = claim(bob, silent.id, lease=60)
        assert taken.assigned_agent_id == team.agents[1][0] and taken.attempt_count == 1
        raises(
            "NOT_ASSIGNED_AGENT",
            alice.tasks.CompleteTask,
            pb.CompleteTaskRequest(task_id=silent.id),
        )
        done = alice.tasks.CompleteTask(pb.CompleteTaskRequest(task_id=kept.id)).task
        assert (done.status, done.attempt_count) == (pb.TASK_STATUS_DONE, 0)

        # Attempts are counted; past max_attempts the sweeper cancels the task.
        limited = create(max_attempts=2)
        for holder in (alice, bob):
            claim(holder, limited.id, lease=0.5)
            deadline = time.monotonic() + 3
            while row(limited.id).status == "in_progress" and time.monotonic() < deadline:
                time.sleep(0.05)
        final = row(limited.id)
        assert (final.status, final.attempt_count) == ("cancelled", 2)
        reasons = TaskEvent.select(TaskEvent.reason).where(TaskEvent.task_id == limited.id)
        assert [r.reason for r in reasons if r.reason] == [
            "lease_expired",
            "max_attempts_exceeded",
            "max_attempts_exceeded",
        ]


# --- 32 claimers, two servers --------------------------------------------------------------


def test_32_claimers_on_two_servers_claim_each_task_once_best_first(postgres, tmp_path):
    with (
        Served(tmp_path, "--db", postgres, *NO_LIMITS) as first,
        Served(tmp_path, "--db", postgres, *NO_LIMITS) as second,
    ):
        first.wait_serving()
        second.wait_serving()
        team = new_team(first, 32)
        admin = first.client(team.key)
        priorities = [HIGH, NORMAL, LOW] * 167
        for priority in priorities[:500]:
            admin.tasks.CreateTask(
                pb.CreateTaskRequest(project_id=team.project_id, title="t", priority=priority)
            )
        clients = [
            (first if n % 2 else second).client(token) for n, (_, token) in enumerate(team.agents)
        ]
        go = threading.Barrier(len(clients))

        def drain(client: Client) -> list[str]:
            go.wait()
            got = []
            while True:
                answer = client.tasks.ClaimNextTask(pb.ClaimNextTaskRequest(), timeout=60)
                if not answer.HasField("task"):
                    return got
                got.append(answer.task.id)

        with ThreadPoolExecutor(len(clients)) as pool:
            claimed = [task_id for got in pool.map(drain, clients) for task_id in got]

    counts = Counter(claimed)
    assert len(counts) == 500 and set(counts.values()) == {1}
    claims = (
        TaskEvent.select(TaskEvent.task_id, TaskEvent.priority)
        .where((TaskEvent.team == team.id) & (TaskEvent.event == "task.claimed"))
        .order_by(TaskEvent.event_id)
    )
    # In commit order, a lower priority is handed out only while every better task left
    # was being claimed by one of the other 31 callers at that moment (skip-locked).
    left = Counter(priorities[:500])
    worst = 0
    for claim_row in claims:
        better = sum(n for p, n in left.items() if p > claim_row.priority)
        worst = max(worst, better)
        left[claim_row.priority] -= 1
    print(f"\nat most {worst} better tasks were in flight when a worse one was handed out")
    assert worst < len(clients)


def test_waiting_claimers_get_a_task_created_later_within_1_s_from_either_process(
    postgres, tmp_path
):
    with (
        Served(tmp_path, "--db", postgres, *NO_LIMITS) as first,
        Served(tmp_path, "--db", postgres, *NO_LIMITS) as second,
    ):
        first.wait_serving()
        second.wait_serving()
        team = new_team(first, 4)
        creators = {"first": first.client(team.key), "second": second.client(team.key)}
        waiters = [
            (name, server.client(token))
            for (name, server), (_, token) in zip(
                [("first", first), ("second", second)] * 2, team.agents, strict=True
            )
        ]
        delays = []
        for creator_name, creator in creators.items():
            for waiter_name, waiter in waiters:
                answer: list = []

                def wait_for_one(client=waiter, answer=answer) -> None:
                    response = client.tasks.ClaimNextTask(
                        pb.ClaimNextTaskRequest(wait=seconds(20)), timeout=30
                    )
                    answer.append((time.monotonic(), response))

                thread = threading.Thread(target=wait_for_one)
                thread.start()
                time.sleep(0.5)  # parked
                created_at = time.monotonic()
                task = creator.tasks.CreateTask(
                    pb.CreateTaskRequest(project_id=team.project_id, title="late")
                ).task
                thread.join(30)
                got_at, response = answer[0]
                assert response.task.id == task.id
                delays.append((creator_name, waiter_name, got_at - created_at))

    print("\n" + "\n".join(f"created on {c}, waited on {w}: {d:.3f} s" for c, w, d in delays))
    assert all(delay < 1.0 for _, _, delay in delays), delays


# --- WatchTasks resume ---------------------------------------------------------------------


def test_a_watcher_reconnects_and_gets_the_50_events_it_missed_then_live_ones(postgres, tmp_path):
    with (
        Served(tmp_path, "--db", postgres, *NO_LIMITS) as first,
        Served(tmp_path, "--db", postgres, *NO_LIMITS) as second,
    ):
        first.wait_serving()
        second.wait_serving()
        team = new_team(first, 0)
        watcher = first.client(team.key)
        stream = watcher.tasks.WatchTasks(pb.WatchTasksRequest(), timeout=60)
        seen: list = []

        def read_one() -> None:
            for event in stream:
                seen.append(event)
                stream.cancel()
                break

        reader = threading.Thread(target=read_one)
        reader.start()
        time.sleep(0.5)
        watcher.tasks.CreateTask(pb.CreateTaskRequest(project_id=team.project_id, title="seen"))
        reader.join(10)
        last = seen[0].event_id  # then the client is gone

        writers = [(first if n % 2 else second).client(team.key) for n in range(8)]
        go = threading.Barrier(8)

        def write(n: int) -> list[str]:
            go.wait()
            titles = [f"w{n}-{k}" for k in range(7 if n < 2 else 6)]  # 2*7 + 6*6 = 50
            for title in titles:
                writers[n].tasks.CreateTask(
                    pb.CreateTaskRequest(project_id=team.project_id, title=title)
                )
            return titles

        with ThreadPoolExecutor(8) as pool:
            written = {title for titles in pool.map(write, range(8)) for title in titles}
        assert len(written) == 50

        resumed = second.client(team.key).tasks.WatchTasks(
            pb.WatchTasksRequest(after_event_id=last), timeout=60
        )
        replay = []
        for event in resumed:
            replay.append(event)
            if len(replay) == 50:
                first.client(team.key).tasks.CreateTask(
                    pb.CreateTaskRequest(project_id=team.project_id, title="live")
                )
            if len(replay) == 51:
                resumed.cancel()
                break

    titles = [event.task.title for event in replay]
    assert set(titles[:50]) == written and len(set(titles[:50])) == 50
    assert titles[50] == "live"
    ids = [event.event_id for event in replay]
    assert ids == sorted(ids) and len(set(ids)) == 51 and ids[0] > last
    stored = [
        e.event_id
        for e in TaskEvent.select(TaskEvent.event_id)
        .where((TaskEvent.team == team.id) & (TaskEvent.event_id > last))
        .order_by(TaskEvent.event_id)
    ]
    assert ids == stored


# --- many parked calls ---------------------------------------------------------------------

LOAD = Path(__file__).with_name("queue_load_client.py")


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[int(len(ordered) * 0.99) - 1]


def get_task_latencies(client: Client, task_id: str, count: int = 400) -> list[float]:
    request = pb.GetTaskRequest(task_id=task_id)
    taken = []
    for _ in range(count):
        start = time.perf_counter()
        client.tasks.GetTask(request, timeout=10)
        taken.append(time.perf_counter() - start)
    return taken


def test_1000_parked_waits_and_200_streams_leave_get_task_and_health_fast(alone, tmp_path):
    with Served(tmp_path, "--db", alone, *NO_LIMITS) as served:
        served.wait_serving()
        team = new_team(served, 1)
        agent = served.client(team.agents[0][1])
        admin = served.client(team.key)
        # Taken by nobody: the waits (of the agent) stay parked; GetTask reads it.
        task = admin.tasks.CreateTask(
            pb.CreateTaskRequest(
                project_id=team.project_id, title="read me", assigned_agent_id=new_agent(admin)
            )
        ).task
        get_task_latencies(agent, task.id, 50)  # warm up
        quiet = get_task_latencies(agent, task.id)

        load = subprocess.Popen(
            [sys.executable, str(LOAD)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=cli_env(),
        )
        try:
            assert load.stdin is not None and load.stdout is not None
            order = {"target": f"127.0.0.1:{served.port}", "token": team.agents[0][1]}
            load.stdin.write(json.dumps({**order, "waits": 1000, "watches": 200}) + "\n")
            load.stdin.flush()
            assert load.stdout.readline().strip() == "ready 1000 200"
            # A busy moment of a shared machine spoils one series; a loop held up by the
            # parked calls spoils every one: the best of up to three series counts.
            bound = 3 * max(p99(quiet), 0.002)
            busy = get_task_latencies(agent, task.id)
            for _ in range(2):
                if p99(busy) <= bound:
                    break
                busy = min(busy, get_task_latencies(agent, task.id), key=p99)
            health = []
            for _ in range(20):
                start = time.perf_counter()
                assert served.health() == 1  # SERVING
                health.append(time.perf_counter() - start)
            load.stdin.write("stop\n")
            load.stdin.flush()
            outcome = json.loads(load.stdout.readline())
        finally:
            if load.poll() is None:
                load.kill()
            load.wait(30)

    print(
        f"\nGetTask p99 {p99(quiet) * 1000:.2f} ms alone, {p99(busy) * 1000:.2f} ms beside"
        f" 1,000 parked waits and 200 streams; health max {max(health) * 1000:.1f} ms"
    )
    assert outcome == {"failed": []}
    # A floor of 2 ms: below it the ratio measures the scheduler of a shared machine.
    assert p99(busy) <= bound
    assert max(health) < 0.1


def new_agent(admin: Client) -> str:
    return admin.agents.CreateAgent(agents_pb2.CreateAgentRequest(name="someone else")).agent.id
