"""Hostile input and hostile clients: every answer is a documented error, the server stays up."""

from __future__ import annotations

import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agenttasks.server import server as server_module
from agenttasks.server.ratelimit import RateLimiter, RateLimits
from agenttasks.server.storage import rate_buckets
from agenttasks.v1 import agents_pb2, projects_pb2, tasks_pb2, teams_pb2

from .conftest import new_team, start_server
from .helpers import Client, error_body, raises

BAD_TIMESTAMPS = [
    {"seconds": 1, "nanos": -1},
    {"nanos": 1_000_000_000},
    {"seconds": 253_402_300_800},  # year 10000
    {"seconds": -62_135_596_801},  # before year 1
    {"seconds": 2**62},
]
BAD_DURATIONS = [
    {"seconds": 1, "nanos": -1},
    {"nanos": 1_000_000_000},
    {"seconds": 2**62},
    {"seconds": -(2**62)},
]


@pytest.mark.parametrize("stamp", BAD_TIMESTAMPS)
def test_an_out_of_range_due_time_is_a_validation_error(world, stamp):
    project = world.project()
    due = timestamp_pb2.Timestamp(**stamp)
    body = raises(
        "VALIDATION_ERROR",
        world.admin.tasks.CreateTask,
        tasks_pb2.CreateTaskRequest(project_id=project.id, title="t", due_time=due),
    )
    assert body.violations == ["due_time"]
    task = world.admin.tasks.CreateTask(
        tasks_pb2.CreateTaskRequest(project_id=project.id, title="t")
    ).task
    raises(
        "VALIDATION_ERROR",
        world.admin.tasks.UpdateTask,
        tasks_pb2.UpdateTaskRequest(task=tasks_pb2.Task(id=task.id, due_time=due)),
    )


@pytest.mark.parametrize("span", BAD_DURATIONS)
def test_an_out_of_range_duration_is_a_validation_error(world, span):
    project = world.project()
    agent, _ = world.agent()
    task = world.admin.tasks.CreateTask(
        tasks_pb2.CreateTaskRequest(project_id=project.id, title="t")
    ).task
    value = duration_pb2.Duration(**span)
    tasks = world.admin.tasks
    raises(
        "VALIDATION_ERROR",
        tasks.ClaimTask,
        tasks_pb2.ClaimTaskRequest(task_id=task.id, agent_id=agent.id, lease_duration=value),
    )
    raises(
        "VALIDATION_ERROR",
        tasks.ClaimNextTask,
        tasks_pb2.ClaimNextTaskRequest(agent_id=agent.id, wait=value),
        timeout=5,
    )
    raises(
        "VALIDATION_ERROR",
        world.admin.agents.RotateAgentToken,
        agents_pb2.RotateAgentTokenRequest(agent_id=agent.id, grace_period=value),
    )


NESTED = base64.urlsafe_b64encode(b"[" * 1000 + b"]" * 1000).decode()


def test_a_deeply_nested_page_token_is_a_validation_error(world):
    for call, request in [
        (world.admin.tasks.ListTasks, tasks_pb2.ListTasksRequest(page_token=NESTED)),
        (world.admin.projects.ListProjects, projects_pb2.ListProjectsRequest(page_token=NESTED)),
        (world.admin.agents.ListAgents, agents_pb2.ListAgentsRequest(page_token=NESTED)),
    ]:
        assert raises("VALIDATION_ERROR", call, request).violations == ["page_token"]


def test_create_task_racing_delete_project_is_ok_or_not_found(world):
    def create(project_id: str) -> str:
        try:
            world.admin.tasks.CreateTask(
                tasks_pb2.CreateTaskRequest(project_id=project_id, title="racing")
            )
            return "OK"
        except grpc.RpcError as error:
            return error.code().name

    outcomes: set[str] = set()
    with ThreadPoolExecutor(8) as pool:
        for _ in range(5):
            project = world.project()
            creates = [pool.submit(create, project.id) for _ in range(6)]
            world.admin.projects.DeleteProject(
                projects_pb2.DeleteProjectRequest(project_id=project.id, force=True)
            )
            outcomes |= {future.result() for future in creates}
    assert outcomes <= {"OK", "NOT_FOUND"}, outcomes


def _raw(channel: grpc.Channel, method: str):
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


@pytest.mark.parametrize(
    "data", [b"\x0a\x03\xff\xfe\xfd", b"\x0a\x10abc", b"\xff\xff\xff", b"\x0a\x80"]
)
def test_undecodable_request_bytes_are_a_validation_error(world, data, caplog):
    metadata = [("authorization", f"Bearer {world.key}")]
    with pytest.raises(grpc.RpcError) as caught:
        _raw(world.channel, "/agenttasks.v1.TaskService/GetTask")(data, metadata=metadata)
    body = error_body(caught.value)
    assert (body.code, body.violations) == ("VALIDATION_ERROR", ["request"])
    assert not [r for r in caplog.records if r.exc_info], "no traceback per request"


def test_long_inputs_are_quoted_at_most_100_characters(world):
    long_id = "a" * 4000
    body = raises("NOT_FOUND", world.admin.tasks.GetTask, tasks_pb2.GetTaskRequest(task_id=long_id))
    assert len(body.message) < 200
    project = world.project()
    task = world.admin.tasks.CreateTask(
        tasks_pb2.CreateTaskRequest(project_id=project.id, title="t")
    ).task
    paths = ["p" * 4000 + str(n) for n in range(50)]
    body = raises(
        "VALIDATION_ERROR",
        world.admin.tasks.UpdateTask,
        tasks_pb2.UpdateTaskRequest(
            task=tasks_pb2.Task(id=task.id), update_mask=field_mask_pb2.FieldMask(paths=paths)
        ),
    )
    assert len(body.message) < 1000


@pytest.mark.parametrize("size", [1025, 2048, 8 * 1024, 12 * 1024, 16 * 1024, 32 * 1024])
def test_an_authorization_value_over_1_kb_is_unauthorized_every_time(world, size):
    value = "Bearer " + world.key + "x" * (size - 7 - len(world.key))
    client = Client(world.channel, value[len("Bearer ") :])
    for _ in range(5):
        raises("UNAUTHORIZED", client.teams.WhoAmI, teams_pb2.WhoAmIRequest())


@pytest.fixture
def short_lived_connections(monkeypatch, database_url):
    monkeypatch.setattr(server_module, "MAX_CONNECTION_AGE_MS", 2000)
    monkeypatch.setattr(server_module, "CONNECTION_AGE_GRACE_MS", 1000)
    running = start_server(rate_limits=RateLimits(0, 0, 0))
    yield running
    running.stop(0)


def test_a_hundred_hanging_calls_neither_stop_the_server_nor_live_forever(
    short_lived_connections,
):
    port = short_lived_connections.port
    never = threading.Event()

    def no_request():
        never.wait()
        yield b""

    hanging = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as idle:
        opener = idle.stream_unary("/agenttasks.v1.TaskService/GetTask")
        hanging = [opener.future(no_request()) for _ in range(100)]
        time.sleep(0.3)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as fresh:
            started = time.monotonic()
            health = health_pb2_grpc.HealthStub(fresh).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            world = new_team(fresh)
            raises("NOT_FOUND", world.admin.tasks.GetTask, tasks_pb2.GetTaskRequest(task_id="x"))
            assert time.monotonic() - started < 1
        # The server's limit (connection age plus grace) ends them; the client set none.
        for future in hanging:
            assert future.exception(timeout=10).code() == grpc.StatusCode.UNAVAILABLE
        never.set()


def test_two_servers_on_one_database_share_one_tokens_task_limit(database_url):
    rate_buckets.forget_before(float("inf"))
    limits = RateLimits(task=120, other=0, auth_failures=0)
    servers = [start_server(limiter=RateLimiter(), rate_limits=limits) for _ in range(2)]
    try:
        channels = [grpc.insecure_channel(f"127.0.0.1:{s.port}") for s in servers for _ in range(5)]
        world = new_team(channels[0])
        admitted = 0
        for n in range(200):
            client = Client(channels[n % len(channels)], world.key)
            try:
                client.tasks.ListTasks(tasks_pb2.ListTasksRequest(page_size=1))
                admitted += 1
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # 120 per minute, refilled at 2 per second while the loop runs; 10 % tolerance.
        assert 108 <= admitted <= 132, admitted
        for channel in channels:
            channel.close()
    finally:
        for running in servers:
            running.stop(0)
