"""`make bench`, second part: one call at a time, mean latency per call over loopback.

Reports per-call means from one run, and ratios between calls measured in that same run:
this machine may be shared, so absolute numbers drift while ratios hold.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import grpc

from agenttasks.server.config import ServerConfig
from agenttasks.server.domain import teams, tokens
from agenttasks.server.ratelimit import RateLimits
from agenttasks.server.server import create_server
from agenttasks.server.storage import db, migrations
from agenttasks.v1 import agents_pb2, projects_pb2, tasks_pb2, teams_pb2

from .helpers import Client


def _time(call: Callable[[], object], repeat: int) -> float:
    """Mean seconds per call over `repeat` calls, after a short warm-up."""
    for _ in range(min(20, repeat)):
        call()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.fmean(samples)


def run(url: str, repeat: int) -> dict[str, float]:
    db.open_database(url)
    migrations.migrate()
    server = create_server(ServerConfig(host="127.0.0.1", port=0, rate_limits=RateLimits(0, 0, 0)))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            _, key = teams.create_team("bench")
            admin = Client(channel, key)
            project = admin.projects.CreateProject(
                projects_pb2.CreateProjectRequest(name="b")
            ).project
            made = admin.agents.CreateAgent(agents_pb2.CreateAgentRequest(name="a"))
            agent = Client(channel, made.token)
            task = admin.tasks.CreateTask(
                tasks_pb2.CreateTaskRequest(project_id=project.id, title="t")
            ).task
            health = channel.unary_unary("/grpc.health.v1.Health/Check")
            results = {
                "health check (no auth)": _time(lambda: health(b""), repeat),
                "token lookup alone": _time(lambda: tokens.authenticate(key), repeat),
                "WhoAmI": _time(lambda: admin.teams.WhoAmI(teams_pb2.WhoAmIRequest()), repeat),
                "GetTask (agent)": _time(
                    lambda: agent.tasks.GetTask(tasks_pb2.GetTaskRequest(task_id=task.id)), repeat
                ),
                "ListTasks page of 50": _time(
                    lambda: admin.tasks.ListTasks(tasks_pb2.ListTasksRequest()), repeat // 4
                ),
                "CreateTask": _time(
                    lambda: admin.tasks.CreateTask(
                        tasks_pb2.CreateTaskRequest(project_id=project.id, title="t")
                    ),
                    repeat,
                ),
            }
            claimable = [
                admin.tasks.CreateTask(
                    tasks_pb2.CreateTaskRequest(project_id=project.id, title="c")
                ).task.id
                for _ in range(repeat + 20)
            ]
            ids = iter(claimable)
            results["ClaimTask"] = _time(
                lambda: agent.tasks.ClaimTask(tasks_pb2.ClaimTaskRequest(task_id=next(ids))), repeat
            )
            return results
    finally:
        server.stop(0)
        db.close()


def report(backend: str, results: dict[str, float]) -> None:
    base = results["health check (no auth)"]
    print(f"\n{backend}")
    print(f"  {'call':28} {'mean µs':>9} {'× health check':>15}")
    for name, seconds in results.items():
        print(f"  {name:28} {seconds * 1e6:9.0f} {seconds / base:15.1f}")
