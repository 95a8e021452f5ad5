"""Server behaviour around the RPCs: health during shutdown, internal errors, unknown methods."""

from __future__ import annotations

import logging
import re
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agenttasks.server.domain import teams
from agenttasks.server.ratelimit import RateLimits
from agenttasks.v1 import tasks_pb2, teams_pb2, teams_pb2_grpc

from .conftest import start_server
from .helpers import lock_held_by_another_connection, raises

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_health_turns_not_serving_when_shutdown_begins(database_url):
    running = start_server()
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "agenttasks.v1.TaskService"):
            assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == SERVING
        updates = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert next(updates).status == SERVING
        stopper = threading.Thread(target=running.stop, args=(1,))
        stopper.start()
        assert next(updates).status == NOT_SERVING
        stopper.join()


def test_an_unexpected_failure_is_internal_and_shows_no_internals(world, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("database exploded at /srv/secret/path")

    monkeypatch.setattr(teams, "get_team", broken)
    with caplog.at_level(logging.ERROR, logger="agenttasks.server.api.door"):
        body = raises("INTERNAL", world.admin.teams.GetTeam, teams_pb2.GetTeamRequest())
    request_id = re.fullmatch(r"Internal error \(request id ([0-9a-f]{16})\)", body.message)
    assert request_id, body.message
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert request_id.group(1) in logged and "GetTeam" in logged


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_calls_go_on_while_another_process_holds_sqlite_write_lock(world, database_url):
    # SQLite calls run on the event loop thread: one waiting for the lock would stop them all.
    project = world.project()
    task = world.admin.tasks.CreateTask(
        tasks_pb2.CreateTaskRequest(project_id=project.id, title="before")
    ).task
    with lock_held_by_another_connection(database_url.removeprefix("sqlite:///")):
        creating = world.admin.tasks.CreateTask.future(
            tasks_pb2.CreateTaskRequest(project_id=project.id, title="after")
        )
        for _ in range(20):  # reads answer meanwhile, and the write waits on the pool
            read = world.admin.tasks.GetTask(tasks_pb2.GetTaskRequest(task_id=task.id), timeout=5)
            assert read.task.title == "before"
        assert not creating.done()
    assert creating.result(timeout=30).task.title == "after"


def test_an_unknown_method_is_unimplemented(channel):
    call = channel.unary_unary("/agenttasks.v1.TaskService/Nope")
    try:
        call(b"", timeout=5)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    else:
        raise AssertionError("an unknown method answered")


def test_calls_of_every_method_are_admitted_through_one_queue(database_url, monkeypatch):
    # grpc.aio admits the calls of each method registered with gRPC core through a queue of
    # that method's own (see api/door.py); the server registers none, and every call still
    # reaches its handler.
    registered: list[str] = []
    monkeypatch.setattr(
        grpc.aio._server.Server,
        "add_registered_method_handlers",
        lambda server, service, handlers: registered.append(service),
    )
    running = start_server(rate_limits=RateLimits(0, 0, 0))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest()).status == SERVING
            teams_stub = teams_pb2_grpc.TeamServiceStub(channel)
            raises("UNAUTHORIZED", teams_stub.WhoAmI, teams_pb2.WhoAmIRequest(), timeout=5)
    finally:
        running.stop(0)
    assert registered == []


def test_stopping_lets_in_flight_calls_finish_within_the_grace(database_url, monkeypatch):
    from .conftest import new_team

    started, release = threading.Event(), threading.Event()
    real_get_team = teams.get_team

    def slow_get_team(*args, **kwargs):
        started.set()
        release.wait(10)
        return real_get_team(*args, **kwargs)

    monkeypatch.setattr(teams, "get_team", slow_get_team)
    running = start_server()
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        world = new_team(channel)
        future = world.admin.teams.GetTeam.future(teams_pb2.GetTeamRequest(), timeout=30)
        assert started.wait(10)
        stopper = threading.Thread(target=running.stop, args=(30,))
        stopper.start()
        release.set()
        assert future.result().team.id == world.id
        stopper.join()
