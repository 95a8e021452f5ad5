"""The load generator of `make bench`: a fixed number of calls in flight for a fixed time.

Runs in its own process (one event loop, one grpc.aio channel unless told more); `drive`
returns what it saw and the benchmark adds up the processes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import grpc

from agenttasks.v1 import tasks_pb2, tasks_pb2_grpc, teams_pb2, teams_pb2_grpc

from .bench_servers import CEILING_METHOD

WATCH_SETTLE_SECONDS = 0.5  # streams are open and parked before the writer starts


class Exhausted(Exception):
    """The seeded tasks ran out: the worker stops, or empty answers would inflate the rate."""


class Several(tuple):
    """The latencies of the calls one step of a worker made, when it makes more than one
    (the claim/complete cycle): each counts as a call, as the ceiling's calls do."""


@dataclass
class Job:
    """One measurement in one client process."""

    scenario: str
    port: int
    concurrency: int
    duration: float
    warmup: float
    world: dict = field(default_factory=dict)
    claimable: list[str] = field(default_factory=list)
    writer: bool = False  # WatchTasks: this process also creates the tasks
    # Connections of this process, the calls in flight spread over them: the processes of
    # `serve --workers N` share the port, and the kernel spreads connections, not calls.
    channels: int = 1


@dataclass
class Seen:
    calls: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    exhausted: bool = False  # ran out of seeded tasks before the end


def drive(job: Job) -> Seen:
    return asyncio.run(_drive(job))


async def _drive(job: Job) -> Seen:
    # Channels of one process share a connection unless each keeps its own subchannels.
    options = [("grpc.use_local_subchannel_pool", 1)] if job.channels > 1 else []
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{job.port}", options=options)
        for _ in range(job.channels)
    ]
    try:
        for channel in channels:
            await channel.channel_ready()
        if job.scenario == "WatchTasks":
            return await _watch(channels[0], job)
        calls = [
            _calls(channel, replace(job, claimable=job.claimable[index :: len(channels)]))
            for index, channel in enumerate(channels)
        ]
        return await _closed_loop(calls, job)
    finally:
        for channel in channels:
            await channel.close()


def _calls(channel: grpc.aio.Channel, job: Job) -> Callable[[], Awaitable[Any]]:
    if job.scenario == "ceiling":
        empty = channel.unary_unary(CEILING_METHOD)
        return lambda: empty(b"")
    stub = tasks_pb2_grpc.TaskServiceStub(channel)
    world = job.world
    key = (("authorization", f"Bearer {world['team_key']}"),)
    agent = (("authorization", f"Bearer {world['agent_token']}"),)
    queue = world["projects"]["queue"]
    if job.scenario == "WhoAmI":
        teams = teams_pb2_grpc.TeamServiceStub(channel)
        who = teams_pb2.WhoAmIRequest()
        return lambda: teams.WhoAmI(who, metadata=agent)
    if job.scenario == "GetTask":
        get = tasks_pb2.GetTaskRequest(task_id=world["task_id"])
        return lambda: stub.GetTask(get, metadata=agent)
    if job.scenario == "ListTasks":
        page = tasks_pb2.ListTasksRequest(project_id=world["projects"]["main"], page_size=50)
        return lambda: stub.ListTasks(page, metadata=key)
    if job.scenario == "CreateTask":
        create = tasks_pb2.CreateTaskRequest(project_id=world["projects"]["main"], title="t")
        return lambda: stub.CreateTask(create, metadata=key)
    if job.scenario == "ClaimNextTask":
        return lambda: _claim_next(stub, queue, agent)
    if job.scenario == "ClaimTask→CompleteTask":
        ids = iter(job.claimable)
        return lambda: _cycle(stub, next(ids, None), agent)
    raise ValueError(job.scenario)


async def _claim_next(stub, project_id: str, metadata) -> None:
    request = tasks_pb2.ClaimNextTaskRequest(project_id=project_id)
    if not (await stub.ClaimNextTask(request, metadata=metadata)).HasField("task"):
        raise Exhausted


async def _cycle(stub, task_id: str | None, metadata) -> Several:
    if task_id is None:
        raise Exhausted
    started = time.perf_counter()
    await stub.ClaimTask(tasks_pb2.ClaimTaskRequest(task_id=task_id), metadata=metadata)
    claimed = time.perf_counter()
    await stub.CompleteTask(
        tasks_pb2.CompleteTaskRequest(task_id=task_id, result="ok"), metadata=metadata
    )
    return Several((claimed - started, time.perf_counter() - claimed))


async def _closed_loop(calls: list[Callable[[], Awaitable[Any]]], job: Job) -> Seen:
    """`concurrency` workers, each starting its next call when the last one ends; worker i
    calls through `calls[i % len(calls)]` (one per channel)."""
    seen = Seen()
    loop = asyncio.get_running_loop()
    start = loop.time() + job.warmup
    end = start + job.duration
    stopped_at: list[float] = []

    async def worker(call: Callable[[], Awaitable[Any]]) -> None:
        while (now := loop.time()) < end:
            try:
                made = await call()
            except Exhausted:
                seen.exhausted = True
                stopped_at.append(loop.time())
                return
            if now < start:
                continue
            if isinstance(made, Several):
                seen.calls += len(made)
                seen.latencies.extend(made)
            else:
                seen.calls += 1
                seen.latencies.append(loop.time() - now)

    await asyncio.gather(*(worker(calls[i % len(calls)]) for i in range(job.concurrency)))
    seen.seconds = max(min([end, *stopped_at]) - start, 1e-9)
    return seen


async def _watch(channel: grpc.aio.Channel, job: Job) -> Seen:
    """`concurrency` WatchTasks streams; counts events delivered while a writer creates tasks.

    Latency is delivery lag: receipt time minus the event's time (one machine, one clock).
    """
    stub = tasks_pb2_grpc.TaskServiceStub(channel)
    world = job.world
    key = (("authorization", f"Bearer {world['team_key']}"),)
    watched = world["projects"]["watch"]
    seen = Seen()
    loop = asyncio.get_running_loop()
    start = loop.time() + WATCH_SETTLE_SECONDS + job.warmup
    end = start + job.duration
    wall_start = time.time() + (start - loop.time())
    wall_end = wall_start + job.duration

    async def watcher() -> None:
        stream = stub.WatchTasks(tasks_pb2.WatchTasksRequest(project_id=watched), metadata=key)
        try:
            async for event in stream:
                received = time.time()
                created = event.time.seconds + event.time.nanos / 1e9
                if wall_start <= created < wall_end:
                    seen.calls += 1
                    seen.latencies.append(received - created)
        finally:
            stream.cancel()

    async def writer() -> None:
        create = tasks_pb2.CreateTaskRequest(project_id=watched, title="w")
        await asyncio.sleep(WATCH_SETTLE_SECONDS)
        while loop.time() < end:
            await stub.CreateTask(create, metadata=key)

    watchers = [asyncio.create_task(watcher()) for _ in range(job.concurrency)]
    if job.writer:
        await writer()
    else:
        await asyncio.sleep(max(end - loop.time(), 0))
    await asyncio.sleep(0.2)  # events still in flight at the end count if they were sent in time
    for task in watchers:
        task.cancel()
    await asyncio.gather(*watchers, return_exceptions=True)
    seen.seconds = job.duration
    return seen
