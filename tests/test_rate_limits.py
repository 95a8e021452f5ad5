"""Rate limits per token and per client address, on servers of their own."""

from __future__ import annotations

import math
import time

import grpc
import pytest

from agenttasks.server.cli import _parser
from agenttasks.server.ratelimit import RateLimiter, RateLimits
from agenttasks.server.storage import rate_buckets
from agenttasks.v1 import tasks_pb2, teams_pb2

from .conftest import new_team, start_server
from .helpers import Client, lock_held_by_another_connection, raises

LIST = tasks_pb2.ListTasksRequest(page_size=1)
WHO = teams_pb2.WhoAmIRequest()


class StoppedClock:
    """Time stands still unless a test moves it: "within a minute" means exactly that."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def limited(database_url):
    """A server with the default limits (120 task, 60 other, 5 auth failures), clock stopped."""
    clock = StoppedClock()
    rate_buckets.forget_before(math.inf)  # buckets are shared through the database
    running = start_server(limiter=RateLimiter(clock), rate_limits=RateLimits())
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield channel, clock
    running.stop(0)


def test_the_121st_task_call_within_a_minute_is_refused_with_retry_info(limited):
    channel, clock = limited
    world = new_team(channel)
    for _ in range(120):
        world.admin.tasks.ListTasks(LIST)
    body = raises("RATE_LIMITED", world.admin.tasks.ListTasks, LIST)
    assert body.message == "Rate limit exceeded: 120 task calls per minute"
    assert body.retry_delay == pytest.approx(0.5)
    # Other services have their own bucket, and time refills the task bucket.
    world.admin.teams.WhoAmI(WHO)
    clock.now += 0.5
    world.admin.tasks.ListTasks(LIST)
    raises("RATE_LIMITED", world.admin.tasks.ListTasks, LIST)


def test_each_token_has_its_own_bucket(limited):
    channel, _ = limited
    world = new_team(channel)
    _, agent = world.agent()
    for _ in range(59):
        world.admin.teams.WhoAmI(WHO)  # 60 other calls with the agent's creation
    raises("RATE_LIMITED", world.admin.teams.WhoAmI, WHO)
    assert agent.teams.WhoAmI(WHO).token_kind == teams_pb2.TOKEN_KIND_AGENT


def test_a_teams_settings_override_the_server_defaults(limited):
    channel, _ = limited
    world = new_team(channel)
    world.admin.teams.UpdateTeam(
        teams_pb2.UpdateTeamRequest(
            team=teams_pb2.Team(settings=teams_pb2.TeamSettings(rate_limit_task_per_minute=3))
        )
    )
    for _ in range(3):
        world.admin.tasks.ListTasks(LIST)
    raises(
        "RATE_LIMITED",
        world.admin.tasks.ListTasks,
        LIST,
        message="Rate limit exceeded: 3 task calls per minute",
    )


def test_six_failed_authentications_are_refused_but_a_valid_token_still_works(limited):
    channel, _ = limited
    world = new_team(channel)
    stranger = Client(channel, "tk_" + "0" * 64)
    for _ in range(5):
        raises("UNAUTHORIZED", stranger.teams.WhoAmI, WHO)
    body = raises("RATE_LIMITED", stranger.teams.WhoAmI, WHO)
    assert body.retry_delay == pytest.approx(12.0)
    assert world.admin.teams.WhoAmI(WHO).team_id == world.id
    raises("RATE_LIMITED", Client(channel, None).teams.WhoAmI, WHO)


def test_zero_disables_the_limits_for_a_thousand_call_loop(database_url):
    running = start_server(rate_limits=RateLimits(task=0, other=0))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            world = new_team(channel)
            for _ in range(1000):
                world.admin.tasks.ListTasks(LIST)
                world.admin.teams.WhoAmI(WHO)
    finally:
        running.stop(0)


def test_the_serve_flags_set_the_limits():
    args = _parser().parse_args(
        [
            "serve",
            "--rate-limit-task",
            "0",
            "--rate-limit-other",
            "0",
            "--rate-limit-auth-failures",
            "9",
        ]
    )
    assert (args.rate_limit_task, args.rate_limit_other, args.rate_limit_auth_failures) == (0, 0, 9)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_call_run_again_where_it_may_wait_is_charged_once(limited, database_url):
    # On SQLite a call starts on the event loop; a write that finds the lock taken by
    # another process makes it run again on the pool. It was admitted the first time.
    channel, _ = limited
    world = new_team(channel)
    create = tasks_pb2.CreateTaskRequest(project_id=world.project().id, title="t")
    world.admin.tasks.CreateTask(create)  # the bucket's share is now in memory
    with lock_held_by_another_connection(database_url.removeprefix("sqlite:///")):
        waiting = world.admin.tasks.CreateTask.future(create)
        time.sleep(0.3)  # admitted on the loop, refused the lock, now waiting on the pool
    waiting.result(timeout=30)
    created = 2
    while created <= 120:
        try:
            world.admin.tasks.CreateTask(create)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            break
        created += 1
    assert created == 120
