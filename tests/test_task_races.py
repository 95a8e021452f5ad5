"""Races over real channels: many agents (threads of this process and two client processes)
call ClaimTask / CompleteTask / MoveTask on the same tasks at the same moment; every change
happens exactly once, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agenttasks.server.storage.models import TaskEvent
from agenttasks.v1 import agents_pb2, tasks_pb2

from .task_race_worker import Job, Runner

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("task_race_worker.py")
TASKS = 200
AGENTS = 16


def run_race(ports: int | list[int], tokens: list[str], jobs: list[Job]) -> list[dict[str, Any]]:
    """Runs `jobs` with the tokens split in three: threads here and two client processes.

    Everyone connects first and starts at one signal, so the calls really overlap. Given
    two server ports, the first client process calls the second server, the rest the
    first. Returns the outcome of every job, in job order.
    """
    ports = [ports] if isinstance(ports, int) else ports
    targets = [f"127.0.0.1:{ports[n % len(ports)]}" for n in range(3)]
    groups = [[i for i in range(len(tokens)) if i % 3 == group] for group in range(3)]

    def plan(group: list[int]) -> tuple[list[str], list[Job], list[int]]:
        local_index = {token_index: k for k, token_index in enumerate(group)}
        numbers = [n for n, job in enumerate(jobs) if job[0] in local_index]
        local_jobs = [(local_index[jobs[n][0]], *jobs[n][1:]) for n in numbers]
        return [tokens[i] for i in group], local_jobs, numbers

    processes = []
    for group, target in zip(groups[1:], targets[1:], strict=True):
        process_tokens, process_jobs, numbers = plan(group)
        process = subprocess.Popen(
            [sys.executable, str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(
            json.dumps({"target": target, "tokens": process_tokens, "jobs": process_jobs}) + "\n"
        )
        process.stdin.flush()
        processes.append((process, numbers))

    local_tokens, local_jobs, local_numbers = plan(groups[0])
    runner = Runner(targets[0], local_tokens)
    start = threading.Event()
    try:
        for process, _ in processes:
            assert process.stdout is not None
            ready = process.stdout.readline().strip()
            assert ready == "ready", process.stderr.read() if process.stderr else ready
        with ThreadPoolExecutor(1) as pool:
            local = pool.submit(runner.run, local_jobs, start)
            for process, _ in processes:
                assert process.stdin is not None
                process.stdin.write("go\n")
                process.stdin.flush()
            start.set()
            local_outcomes = local.result(timeout=120)
        outcomes: list[dict[str, Any]] = [{} for _ in jobs]
        for number, outcome in zip(local_numbers, local_outcomes, strict=True):
            outcomes[number] = outcome
        for process, numbers in processes:
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0, err
            for number, outcome in zip(numbers, json.loads(out), strict=True):
                outcomes[number] = outcome
    finally:
        start.set()
        runner.close()
        for process, _ in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    # Every job ran, in this process or in one of the others.
    assert all(outcome.get("outcome") for outcome in outcomes)
    return outcomes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def second_server(database_url, tmp_path) -> Iterator[int]:
    """Another server process (`agenttasks serve`) on the same database; yields its port."""
    port = free_port()
    script = Path(sys.executable).with_name("agenttasks")
    command = [
        *([str(script)] if script.exists() else [sys.executable, "-m", "agenttasks.server.cli"]),
        "serve",
        *("--host", "127.0.0.1", "--port", str(port), "--db", database_url),
        *("--rate-limit-task", "0", "--rate-limit-other", "0", "--rate-limit-auth-failures", "0"),
        *("--log-level", "WARNING"),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTTASKS_")}
    log = tmp_path / "second-server.log"
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=output, env=env)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for _ in range(600):  # polled for up to about a minute, not a timed assertion
                assert process.poll() is None, log.read_text()
                try:
                    health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    break
                except grpc.RpcError:
                    time.sleep(0.1)
            else:
                pytest.fail(f"the second server did not come up:\n{log.read_text()}")
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def create_tasks(world, count: int = TASKS) -> list[tasks_pb2.Task]:
    project = world.project("Race")
    return [
        world.admin.tasks.CreateTask(
            tasks_pb2.CreateTaskRequest(project_id=project.id, title=f"task {n}")
        ).task
        for n in range(count)
    ]


def make_agents(world, count: int = AGENTS) -> tuple[list[str], list[str]]:
    """(agent ids, agent tokens)."""
    ids, tokens = [], []
    for n in range(count):
        agent, client = world.agent(f"racer {n}")
        ids.append(agent.id)
        tokens.append(client.token)
    return ids, tokens


def claim_all_round_robin(world, tasks, agent_ids) -> dict[str, str]:
    """Task i is claimed for agent i % n (by the team key); returns task id -> holder."""
    holders = {}
    for n, task in enumerate(tasks):
        agent_id = agent_ids[n % len(agent_ids)]
        world.admin.tasks.ClaimTask(tasks_pb2.ClaimTaskRequest(task_id=task.id, agent_id=agent_id))
        holders[task.id] = agent_id
    return holders


def events_by_task(task_ids, event: str) -> dict[str, list[str | None]]:
    """task id -> acting agent ids of its `event` rows, oldest first."""
    found: dict[str, list[str | None]] = defaultdict(list)
    rows = (
        TaskEvent.select()
        .where(TaskEvent.task_id.in_(list(task_ids)) & (TaskEvent.event == event))
        .order_by(TaskEvent.event_id)
    )
    for row in rows:
        found[row.task_id].append(row.agent_id)
    return found


def test_sixteen_agents_in_threads_and_two_processes_claim_each_of_200_tasks_exactly_once(
    world, server
):
    tasks = create_tasks(world)
    agent_ids, tokens = make_agents(world)
    # Every agent tries every task in the same order: each task is contested by all 16.
    jobs: list[Job] = [(a, "claim", task.id, {}) for a in range(AGENTS) for task in tasks]

    outcomes = run_race(server.port, tokens, jobs)

    winners: dict[str, list[str]] = defaultdict(list)
    for (agent, _, task_id, _), outcome in zip(jobs, outcomes, strict=True):
        if outcome["outcome"] == "OK":
            assert outcome["task"]["assigned_agent_id"] == agent_ids[agent]
            assert outcome["task"]["status"] == "TASK_STATUS_IN_PROGRESS"
            winners[task_id].append(agent_ids[agent])
        else:
            assert outcome["outcome"] == "TASK_ALREADY_CLAIMED"
    assert {task.id: len(winners[task.id]) for task in tasks} == {task.id: 1 for task in tasks}

    stored = {
        task.id: world.admin.tasks.GetTask(tasks_pb2.GetTaskRequest(task_id=task.id)).task
        for task in tasks
    }
    assert all(t.status == tasks_pb2.TASK_STATUS_IN_PROGRESS for t in stored.values())
    assert {i: t.assigned_agent_id for i, t in stored.items()} == {
        i: won[0] for i, won in winners.items()
    }
    assert events_by_task(stored, "task.claimed") == {i: won for i, won in winners.items()}


def test_claims_through_two_server_processes_on_one_database_succeed_once_per_task(
    world, server, second_server
):
    tasks = create_tasks(world)
    agent_ids, tokens = make_agents(world)
    jobs: list[Job] = [(a, "claim", task.id, {}) for a in range(AGENTS) for task in tasks]

    outcomes = run_race([server.port, second_server], tokens, jobs)

    winners: dict[str, list[str]] = defaultdict(list)
    for (agent, _, task_id, _), outcome in zip(jobs, outcomes, strict=True):
        if outcome["outcome"] == "OK":
            winners[task_id].append(agent_ids[agent])
        else:
            assert outcome["outcome"] == "TASK_ALREADY_CLAIMED"
    assert {task.id: len(winners[task.id]) for task in tasks} == {task.id: 1 for task in tasks}
    assert events_by_task(winners, "task.claimed") == winners


def test_agents_and_the_team_key_completing_the_same_200_tasks_succeed_once_per_task(world, server):
    tasks = create_tasks(world)
    agent_ids, tokens = make_agents(world)
    holders = claim_all_round_robin(world, tasks, agent_ids)
    callers = [*agent_ids, None]  # None: the team key
    tokens = [*tokens, world.key]
    jobs: list[Job] = [
        (c, "complete", task.id, {"result": f"result of caller {c}"})
        for c in range(len(callers))
        for task in tasks
    ]

    outcomes = run_race(server.port, tokens, jobs)

    winners: dict[str, list[int]] = defaultdict(list)
    for (caller, _, task_id, _), outcome in zip(jobs, outcomes, strict=True):
        is_holder = callers[caller] in (holders[task_id], None)
        if outcome["outcome"] == "OK":
            assert is_holder, "only the assignee or the team key may complete"
            assert outcome["task"]["status"] == "TASK_STATUS_DONE"
            winners[task_id].append(caller)
        elif is_holder:
            assert outcome["outcome"] == "TASK_NOT_IN_PROGRESS"
        else:
            assert outcome["outcome"] in ("NOT_ASSIGNED_AGENT", "TASK_NOT_IN_PROGRESS")
    assert {task.id: len(winners[task.id]) for task in tasks} == {task.id: 1 for task in tasks}

    for task in tasks:
        stored = world.admin.tasks.GetTask(tasks_pb2.GetTaskRequest(task_id=task.id)).task
        assert stored.status == tasks_pb2.TASK_STATUS_DONE
        assert stored.result == f"result of caller {winners[task.id][0]}"
        assert stored.assigned_agent_id == holders[task.id]
    assert events_by_task(holders, "task.completed") == {
        task_id: [callers[won[0]]] for task_id, won in winners.items()
    }


def test_giving_tasks_back_while_others_claim_them_moves_once_and_claims_at_most_once(
    world, server
):
    tasks = create_tasks(world)
    agent_ids, tokens = make_agents(world)
    holders = claim_all_round_robin(world, tasks, agent_ids)
    etags = {
        task.id: world.admin.tasks.GetTask(tasks_pb2.GetTaskRequest(task_id=task.id)).task.etag
        for task in tasks
    }
    team_key = len(tokens)
    tokens = [*tokens, world.key]
    todo = tasks_pb2.TASK_STATUS_TODO
    jobs: list[Job] = []
    for task in tasks:
        holder = agent_ids.index(holders[task.id])
        # The holder and the team key both give the task back from the same etag, while
        # every other agent tries to take it.
        jobs.append((holder, "move", task.id, {"status": todo, "etag": etags[task.id]}))
        jobs.append((team_key, "move", task.id, {"status": todo, "etag": etags[task.id]}))
        jobs.extend((a, "claim", task.id, {}) for a in range(AGENTS) if a != holder)

    outcomes = run_race(server.port, tokens, jobs)

    moves: dict[str, list[str | None]] = defaultdict(list)
    claims: dict[str, list[str]] = defaultdict(list)
    for (caller, action, task_id, _), outcome in zip(jobs, outcomes, strict=True):
        acting = agent_ids[caller] if caller != team_key else None
        if action == "move":
            if outcome["outcome"] == "OK":
                moves[task_id].append(acting)
                assert outcome["task"]["status"] == "TASK_STATUS_TODO"
                assert outcome["task"]["assigned_agent_id"] == ""
            else:
                assert outcome["outcome"] == "ETAG_MISMATCH"
        elif outcome["outcome"] == "OK":
            claims[task_id].append(acting)
        else:
            assert outcome["outcome"] == "TASK_ALREADY_CLAIMED"
    assert Counter(len(moves[task.id]) for task in tasks) == {1: TASKS}
    assert all(len(claims[task.id]) <= 1 for task in tasks)

    for task in tasks:
        stored = world.admin.tasks.GetTask(tasks_pb2.GetTaskRequest(task_id=task.id)).task
        if claims[task.id]:
            assert stored.status == tasks_pb2.TASK_STATUS_IN_PROGRESS
            assert stored.assigned_agent_id == claims[task.id][0]
        else:
            assert stored.status == tasks_pb2.TASK_STATUS_TODO
            assert stored.assigned_agent_id == ""
    assert events_by_task(holders, "task.moved") == moves
    claimed = events_by_task(holders, "task.claimed")
    # The set-up claim (by the team key: no acting agent), then the race's winner if any.
    assert claimed == {task.id: [None, *claims[task.id]] for task in tasks}


def test_concurrent_retries_of_one_complete_with_one_request_id_all_return_the_completed_task(
    world, server
):
    tasks = create_tasks(world, 50)
    agent_ids, tokens = make_agents(world, 1)
    claim_all_round_robin(world, tasks, agent_ids)
    retries = 6
    # The same agent sends each completion six times at once over six connections, as a
    # client does that retries before the first attempt has answered.
    jobs: list[Job] = [
        (r, "complete", task.id, {"result": "done once", "request_id": f"complete-{task.id}"})
        for r in range(retries)
        for task in tasks
    ]

    outcomes = run_race(server.port, tokens * retries, jobs)

    assert Counter(outcome["outcome"] for outcome in outcomes) == {"OK": len(jobs)}
    assert all(outcome["task"]["status"] == "TASK_STATUS_DONE" for outcome in outcomes)
    completed = events_by_task([task.id for task in tasks], "task.completed")
    assert completed == {task.id: [agent_ids[0]] for task in tasks}


def test_an_agent_deactivated_while_it_claims_is_left_holding_no_task(world, server):
    tasks = create_tasks(world, 400)
    (agent_id,), (token,) = make_agents(world, 1)
    connections = 8
    # One agent claims from eight connections at once, each taking its share of the tasks.
    jobs: list[Job] = [
        (c, "claim", task.id, {}) for c in range(connections) for task in tasks[c::connections]
    ]
    claimed_some = threading.Event()

    def deactivate_once_it_holds_work() -> None:
        while not claimed_some.is_set():
            held = world.admin.tasks.ListTasks(
                tasks_pb2.ListTasksRequest(agent_id=agent_id, page_size=20)
            ).tasks
            if len(held) == 20:
                claimed_some.set()
        world.admin.agents.UpdateAgent(
            agents_pb2.UpdateAgentRequest(
                agent=agents_pb2.Agent(id=agent_id, status=agents_pb2.AGENT_STATUS_INACTIVE),
                update_mask=field_mask_pb2.FieldMask(paths=["status"]),
            )
        )

    with ThreadPoolExecutor(1) as pool:
        deactivation = pool.submit(deactivate_once_it_holds_work)
        try:
            outcomes = run_race(server.port, [token] * connections, jobs)
        finally:
            claimed_some.set()
        deactivation.result(timeout=60)

    counts = Counter(outcome["outcome"] for outcome in outcomes)
    assert set(counts) <= {"OK", "UNAUTHORIZED", "TASK_NOT_CLAIMABLE"}, counts
    assert counts["OK"] >= 20
    still_held = world.admin.tasks.ListTasks(
        tasks_pb2.ListTasksRequest(agent_id=agent_id, status=tasks_pb2.TASK_STATUS_IN_PROGRESS)
    ).tasks
    assert list(still_held) == []
    # Every task it did claim went back to todo, unassigned, with a task.moved event.
    won = [
        job[2] for job, outcome in zip(jobs, outcomes, strict=True) if outcome["outcome"] == "OK"
    ]
    released = events_by_task(won, "task.moved")
    assert sorted(released) == sorted(won)
    for task_id in won:
        stored = world.admin.tasks.GetTask(tasks_pb2.GetTaskRequest(task_id=task_id)).task
        assert (stored.status, stored.assigned_agent_id) == (tasks_pb2.TASK_STATUS_TODO, "")


def test_concurrent_retries_of_one_create_with_one_request_id_create_one_task(world, server):
    project = world.project("Retried")
    retries, request_ids = 6, [f"create-{n}" for n in range(40)]
    jobs: list[Job] = [
        (r, "create", "", {"project_id": project.id, "title": rid, "request_id": rid})
        for r in range(retries)
        for rid in request_ids
    ]

    outcomes = run_race(server.port, [world.key] * retries, jobs)

    assert Counter(outcome["outcome"] for outcome in outcomes) == {"OK": len(jobs)}
    created: dict[str, set[str]] = defaultdict(set)
    for (_, _, _, arguments), outcome in zip(jobs, outcomes, strict=True):
        created[arguments["request_id"]].add(outcome["task"]["id"])
    assert all(len(task_ids) == 1 for task_ids in created.values()), created
    stored = world.admin.tasks.ListTasks(tasks_pb2.ListTasksRequest(page_size=100)).tasks
    assert sorted(task.title for task in stored) == sorted(request_ids)
    assert {task.id for task in stored} == set().union(*created.values())
    events = events_by_task([task.id for task in stored], "task.created")
    assert sorted(len(acting) for acting in events.values()) == [1] * len(request_ids)
