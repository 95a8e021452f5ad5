"""The work queue over a real channel, on SQLite and PostgreSQL: leases and heartbeats,
ClaimNextTask's pick and wait, WatchTasks' resume, and request_id fingerprints."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from google.protobuf import duration_pb2

from agenttasks.server.domain import events as domain_events
from agenttasks.server.domain import teams
from agenttasks.server.ratelimit import RateLimits
from agenttasks.server.storage import events as stored_events
from agenttasks.v1 import agents_pb2, projects_pb2
from agenttasks.v1 import tasks_pb2 as pb

from .conftest import start_server
from .fresh import fresh_database
from .helpers import Client, raises
from .test_tasks import (
    CANCELLED,
    DONE,
    HIGH,
    IN_PROGRESS,
    LOW,
    NORMAL,
    TODO,
    Board,
    complete,
    events,
    ids,
    list_tasks,
    move,
)

SHORT = 0.3  # seconds: a lease that runs out while the test waits for it


@pytest.fixture
def board(world) -> Board:
    alice, alice_client = world.agent("Alice")
    bob, bob_client = world.agent("Bob")
    return Board(world, world.project("Board"), alice, alice_client, bob, bob_client)


def seconds(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromMicroseconds(int(value * 1_000_000))
    return duration


def claim(client, task_id: str, lease: float | None = None, agent_id: str = "") -> pb.Task:
    request = pb.ClaimTaskRequest(task_id=task_id, agent_id=agent_id)
    if lease is not None:
        request.lease_duration.CopyFrom(seconds(lease))
    return client.tasks.ClaimTask(request).task


def heartbeat(client, task_id: str, lease: float | None = None, progress: str = "") -> pb.Task:
    request = pb.HeartbeatTaskRequest(task_id=task_id, progress=progress)
    if lease is not None:
        request.lease_duration.CopyFrom(seconds(lease))
    return client.tasks.HeartbeatTask(request).task


def claim_next(client, wait: float = 0, **fields) -> pb.Task | None:
    timeout = fields.pop("timeout", 90)
    request = pb.ClaimNextTaskRequest(wait=seconds(wait), **fields)
    response = client.tasks.ClaimNextTask(request, timeout=timeout)
    return response.task if response.HasField("task") else None


def lapse(task: pb.Task) -> None:
    """Sleeps until the task's lease has run out."""
    remaining = task.lease_expire_time.ToMicroseconds() / 1e6 - time.time()
    time.sleep(max(0.0, remaining) + 0.05)


# --- leases and heartbeats ----------------------------------------------------------------


def test_a_claim_with_a_lease_carries_its_expiry_and_a_heartbeat_extends_it(board: Board):
    task = board.create()
    before = time.time()
    held = claim(board.alice_client, task.id, lease=30)

    beat = heartbeat(board.alice_client, task.id, lease=120, progress="half way")

    assert held.lease_expire_time.ToMicroseconds() / 1e6 == pytest.approx(before + 30, abs=5)
    assert beat.lease_expire_time.ToMicroseconds() / 1e6 == pytest.approx(before + 120, abs=5)
    assert (beat.status, beat.progress, beat.assigned_agent_id) == (
        IN_PROGRESS,
        "half way",
        board.alice.id,
    )
    assert beat.etag != held.etag
    assert board.get(task.id) == beat
    assert [name for name, _ in events(task.id)] == ["task.created", "task.claimed"]


def test_a_heartbeat_without_a_duration_renews_the_claims_lease_and_keeps_progress(board: Board):
    task = board.create()
    claim(board.alice_client, task.id, lease=60)
    heartbeat(board.alice_client, task.id, progress="started")

    before = time.time()
    beat = heartbeat(board.alice_client, task.id)

    assert beat.lease_expire_time.ToMicroseconds() / 1e6 == pytest.approx(before + 60, abs=5)
    assert beat.progress == "started"


def test_a_claim_without_a_lease_has_none_and_heartbeats_keep_it_so(board: Board):
    held = board.claimed_by_alice()

    beat = heartbeat(board.alice_client, held.id, progress="working")

    assert not held.HasField("lease_expire_time")
    assert not beat.HasField("lease_expire_time")
    assert beat.progress == "working"


def test_the_teams_default_lease_applies_to_claims_without_one(board: Board):
    from agenttasks.v1 import teams_pb2

    settings = teams_pb2.TeamSettings(default_lease_duration=seconds(45))
    board.admin.teams.UpdateTeam(
        teams_pb2.UpdateTeamRequest(
            team=teams_pb2.Team(id=board.world.id, settings=settings),
            update_mask={"paths": ["settings.default_lease_duration"]},
        )
    )
    before = time.time()

    held = board.claimed_by_alice()

    assert held.lease_expire_time.ToMicroseconds() / 1e6 == pytest.approx(before + 45, abs=5)


def test_heartbeat_errors_follow_the_check_order(board: Board):
    held = claim(board.alice_client, board.create().id, lease=60)
    todo = board.create()
    done = complete(board.alice_client, board.claimed_by_alice().id, "ok")

    raises("VALIDATION_ERROR", board.alice_client.tasks.HeartbeatTask, pb.HeartbeatTaskRequest())
    body = raises("VALIDATION_ERROR", heartbeat, board.alice_client, held.id, 0, "x" * 10_001)
    assert body.violations == ["progress"]
    body = raises("VALIDATION_ERROR", heartbeat, board.alice_client, held.id, 25 * 3600)
    assert body.violations == ["lease_duration"]
    raises("NOT_FOUND", heartbeat, board.alice_client, "cmissing")
    raises("TASK_NOT_IN_PROGRESS", heartbeat, board.alice_client, todo.id)
    raises("TASK_NOT_IN_PROGRESS", heartbeat, board.bob_client, done.id)  # state first
    raises("NOT_ASSIGNED_AGENT", heartbeat, board.bob_client, held.id)
    assert heartbeat(board.admin, held.id, progress="by the team").progress == "by the team"
    assert heartbeat(board.alice_client, held.id, progress="x" * 10_000).progress == "x" * 10_000


def test_an_expired_lease_reads_as_todo_at_once_everywhere(board: Board):
    held = claim(board.alice_client, board.create().id, lease=SHORT)
    lapse(held)

    seen = board.get(held.id)

    assert (seen.status, seen.assigned_agent_id, seen.attempt_count) == (TODO, "", 1)
    assert not seen.HasField("lease_expire_time")
    assert int(seen.etag) == int(held.etag) + 1  # what the sweeper's write will make it
    listed = {
        status: [t.id for t in list_tasks(board.admin, status=status)]
        for status in (TODO, IN_PROGRESS)
    }
    assert listed == {TODO: [held.id], IN_PROGRESS: []}
    assert list_tasks(board.admin, agent_id=board.alice.id) == []
    assert list_tasks(board.admin) == [seen]


def test_a_status_listing_merges_stored_and_expired_rows_oldest_first_page_by_page(
    board: Board,
):
    todo = board.create()
    expiring = claim(board.alice_client, board.create().id, lease=SHORT)
    cancelled = move(board.admin, board.create().id, CANCELLED)
    last_try = claim(board.bob_client, board.create(max_attempts=1).id, lease=SHORT)
    newest = board.create()
    lapse(expiring)
    lapse(last_try)

    for size in (1, 2, 50):
        listed = {
            status: ids(list_tasks(board.admin, status=status, page_size=size))
            for status in (TODO, CANCELLED, IN_PROGRESS)
        }
        assert listed == {
            TODO: [todo.id, expiring.id, newest.id],
            CANCELLED: [cancelled.id, last_try.id],
            IN_PROGRESS: [],
        }


def test_an_expired_holder_is_refused_and_another_agent_claims_the_task(board: Board):
    held = claim(board.alice_client, board.create().id, lease=SHORT)
    lapse(held)

    raises("TASK_NOT_IN_PROGRESS", complete, board.alice_client, held.id, "late")
    raises("TASK_NOT_IN_PROGRESS", heartbeat, board.alice_client, held.id)
    taken = claim(board.bob_client, held.id, lease=60)
    raises("NOT_ASSIGNED_AGENT", complete, board.alice_client, held.id, "late")
    raises("NOT_ASSIGNED_AGENT", heartbeat, board.alice_client, held.id)

    assert (taken.status, taken.assigned_agent_id, taken.attempt_count) == (
        IN_PROGRESS,
        board.bob.id,
        1,
    )
    assert events(held.id) == [
        ("task.created", None),
        ("task.claimed", board.alice.id),
        ("task.moved", None),  # the expiry, written by the claim that found it
        ("task.claimed", board.bob.id),
    ]


def test_a_holder_that_reclaims_after_expiry_starts_a_new_attempt(board: Board):
    held = claim(board.alice_client, board.create().id, lease=SHORT)
    lapse(held)

    again = claim(board.alice_client, held.id, lease=60)

    assert (again.status, again.attempt_count) == (IN_PROGRESS, 1)


def test_heartbeats_keep_a_task_past_several_lease_lengths(board: Board):
    held = claim(board.alice_client, board.create().id, lease=1)
    deadline = time.monotonic() + 3.5
    while time.monotonic() < deadline:
        heartbeat(board.alice_client, held.id)
        time.sleep(0.2)

    done = complete(board.alice_client, held.id, "kept it")

    assert (done.status, done.attempt_count) == (DONE, 0)


def test_past_max_attempts_an_expired_task_is_cancelled(board: Board):
    task = board.create(max_attempts=2)
    lapse(claim(board.alice_client, task.id, lease=SHORT))
    second = claim(board.bob_client, task.id, lease=SHORT)
    lapse(second)

    seen = board.get(task.id)
    raises("TASK_NOT_CLAIMABLE", claim, board.alice_client, task.id)

    assert (seen.status, seen.attempt_count, seen.assigned_agent_id) == (CANCELLED, 2, "")
    assert [t.id for t in list_tasks(board.admin, status=CANCELLED)] == [task.id]
    assert list_tasks(board.admin, status=TODO) == []


# --- ClaimNextTask -------------------------------------------------------------------------


def test_claim_next_takes_high_before_normal_before_low_then_oldest(board: Board):
    low = board.create(priority=LOW)
    normal_old = board.create(priority=NORMAL)
    high = board.create(priority=HIGH)
    normal_new = board.create(priority=NORMAL)

    order = [claim_next(board.alice_client).id for _ in range(4)]

    assert order == [high.id, normal_old.id, normal_new.id, low.id]
    assert claim_next(board.alice_client) is None


def test_claim_next_skips_tasks_assigned_to_others_and_honours_filters(board: Board):
    other = board.world.project("Other")
    board.create(priority=HIGH, assigned_agent_id=board.bob.id)
    mine = board.create(priority=LOW, assigned_agent_id=board.alice.id)
    elsewhere = board.create(project_id=other.id, priority=HIGH)

    assert claim_next(board.alice_client, project_id=board.project.id).id == mine.id
    assert claim_next(board.alice_client, priority=LOW) is None
    assert claim_next(board.alice_client, priority=HIGH).id == elsewhere.id
    assert claim_next(board.alice_client) is None


def test_claim_next_with_a_lease_and_a_team_key_naming_the_agent(board: Board):
    board.create()

    task = claim_next(board.admin, agent_id=board.alice.id, lease_duration=seconds(30))

    assert (task.status, task.assigned_agent_id) == (IN_PROGRESS, board.alice.id)
    assert task.HasField("lease_expire_time")


def test_claim_next_refuses_a_wait_over_a_minute(board: Board):
    body = raises("VALIDATION_ERROR", claim_next, board.alice_client, wait=61)

    assert body.violations == ["wait"]


def test_a_waiting_claim_gets_a_task_created_later_within_a_second(board: Board):
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(claim_next(board.alice_client, wait=20)))
    waiter.start()
    time.sleep(0.3)  # parked

    created = board.create(title="fresh")
    created_at = time.monotonic()
    waiter.join(10)

    assert time.monotonic() - created_at < 1.0
    assert got[0].id == created.id


def test_a_waiting_claim_gets_a_task_whose_lease_ran_out(board: Board):
    held = claim(board.bob_client, board.create().id, lease=0.5)
    start = time.monotonic()

    task = claim_next(board.alice_client, wait=10)

    assert task.id == held.id and task.assigned_agent_id == board.alice.id
    assert time.monotonic() - start < 1.5


def test_a_wait_with_nothing_to_claim_answers_empty_after_the_wait(board: Board):
    start = time.monotonic()

    assert claim_next(board.alice_client, wait=0.5) is None
    assert 0.4 < time.monotonic() - start < 2


def test_a_wait_ends_at_the_calls_deadline(board: Board, server):
    start = time.monotonic()
    try:
        answer = claim_next(board.alice_client, wait=30, timeout=0.5)
        assert answer is None
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    assert time.monotonic() - start < 2
    time.sleep(0.2)
    assert server.hub.waiting == 0


def test_a_cancelled_wait_leaves_nothing_parked(board: Board, server):
    request = pb.ClaimNextTaskRequest(wait=seconds(30))
    call = board.alice_client.tasks.ClaimNextTask.future(request)
    time.sleep(0.3)
    assert server.hub.waiting >= 1

    call.cancel()
    time.sleep(0.3)

    assert server.hub.waiting == 0


# --- WatchTasks ----------------------------------------------------------------------------


def watch(client, count: int, **fields) -> list[pb.WatchTasksResponse]:
    stream = client.tasks.WatchTasks(pb.WatchTasksRequest(**fields), timeout=20)
    received = []
    for event in stream:
        received.append(event)
        if len(received) == count:
            stream.cancel()
            break
    return received


def test_watch_resumes_after_an_event_with_every_event_missed_in_order_then_live(board: Board):
    stream = board.admin.tasks.WatchTasks(pb.WatchTasksRequest(), timeout=20)
    received: list = []
    reader = threading.Thread(target=lambda: received.extend(_take(stream, 1)))
    reader.start()
    time.sleep(0.5)  # the stream starts with events after it opens
    board.create(title="seen")
    reader.join(10)
    last = received[-1].event_id

    held = claim(board.alice_client, board.create(title="missed").id, lease=60)
    complete(board.alice_client, held.id, "done")
    resumed = board.admin.tasks.WatchTasks(pb.WatchTasksRequest(after_event_id=last), timeout=20)
    replay = []
    for event in resumed:
        replay.append(event)
        if len(replay) == 3:
            board.create(title="live")
        if len(replay) == 4:
            resumed.cancel()
            break

    assert [(e.event, e.task.title) for e in replay] == [
        ("task.created", "missed"),
        ("task.claimed", "missed"),
        ("task.completed", "missed"),
        ("task.created", "live"),
    ]
    assert [e.event_id for e in replay] == sorted({e.event_id for e in replay})
    assert replay[0].event_id > last


def test_watch_filters_like_list_tasks(board: Board):
    other = board.world.project("Elsewhere")
    board.create(title="before the resume point")
    before = domain_events.last_event_id(board.world.id)
    board.create(project_id=other.id, title="not this one")
    board.create(title="this one")

    received = _take(
        board.admin.tasks.WatchTasks(
            pb.WatchTasksRequest(after_event_id=before, project_id=board.project.id), timeout=20
        ),
        1,
    )

    assert [e.task.title for e in received] == ["this one"]


def test_watch_sends_event_task_agent_and_reason(board: Board):
    received: list = []
    stream = board.admin.tasks.WatchTasks(pb.WatchTasksRequest(), timeout=20)
    reader = threading.Thread(target=lambda: received.extend(_take(stream, 3)))
    reader.start()
    time.sleep(0.5)  # the stream starts with events after it opens

    held = claim(board.alice_client, board.create(title="watched").id, lease=SHORT)
    lapse(held)
    board.get(held.id)
    claim(board.bob_client, held.id)  # writes the expiry, then the claim
    reader.join(10)

    assert [(e.event, e.agent.id, e.reason) for e in received] == [
        ("task.created", "", ""),
        ("task.claimed", board.alice.id, ""),
        ("task.moved", "", "lease_expired"),
    ]
    assert received[1].task.status == IN_PROGRESS
    assert received[2].task.status == TODO and received[2].task.attempt_count == 1
    assert received[0].event_id < received[1].event_id < received[2].event_id


def _take(stream, count: int) -> list:
    taken = []
    for event in stream:
        taken.append(event)
        if len(taken) == count:
            stream.cancel()
            break
    return taken


# --- request_id fingerprints ---------------------------------------------------------------


def test_a_request_id_reused_with_other_content_is_refused(board: Board):
    first = board.create(title="Once", request_id="reuse-1")
    held = claim(board.alice_client, first.id)
    complete(board.alice_client, held.id, "answer", request_id="reuse-2")
    board.admin.projects.CreateProject(
        projects_pb2.CreateProjectRequest(name="P", request_id="reuse-3")
    )
    board.admin.agents.CreateAgent(agents_pb2.CreateAgentRequest(name="A", request_id="reuse-4"))

    for call in (
        lambda: board.create(title="Other", request_id="reuse-1"),
        lambda: complete(board.alice_client, held.id, "other answer", request_id="reuse-2"),
        lambda: board.admin.projects.CreateProject(
            projects_pb2.CreateProjectRequest(name="Q", request_id="reuse-3")
        ),
        lambda: board.admin.agents.CreateAgent(
            agents_pb2.CreateAgentRequest(name="B", request_id="reuse-4")
        ),
    ):
        body = raises("VALIDATION_ERROR", call)
        assert body.violations == ["request_id"]
    assert board.create(title="Once", request_id="reuse-1") == board.get(first.id)


def test_a_resume_point_retention_passed_is_refused_naming_the_oldest_event_kept(backend, tmp_path):
    with fresh_database(backend, tmp_path):
        team, key = teams.create_team("Old watchers")
        running = start_server(rate_limits=RateLimits(0, 0, 0))
        try:
            with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                admin = Client(channel, key)
                project = admin.projects.CreateProject(
                    projects_pb2.CreateProjectRequest(name="P")
                ).project
                for n in range(3):
                    admin.tasks.CreateTask(
                        pb.CreateTaskRequest(project_id=project.id, title=f"t{n}")
                    )
                first, second, third = (
                    e.event_id for e in domain_events.events_after(team.id, 0, 10)
                )
                stored_events.note_retention(second)

                body = raises(
                    "EVENTS_EXPIRED",
                    admin.tasks.WatchTasks,
                    pb.WatchTasksRequest(after_event_id=first),
                )
                kept = _take(
                    admin.tasks.WatchTasks(pb.WatchTasksRequest(after_event_id=second), timeout=20),
                    1,
                )
                # A stream from now is never refused, even for a team whose newest event
                # is below the mark (here: every team but this one has none above it).
                stored_events.note_retention(third + 1000)
                live: list = []
                stream = admin.tasks.WatchTasks(pb.WatchTasksRequest(), timeout=20)
                reader = threading.Thread(target=lambda: live.extend(_take(stream, 1)))
                reader.start()
                time.sleep(0.5)
                admin.tasks.CreateTask(pb.CreateTaskRequest(project_id=project.id, title="now"))
                reader.join(10)
        finally:
            running.stop(0)

    assert f"the oldest event kept is {third}" in body.message
    assert [e.event_id for e in kept] == [third]
    assert [e.task.title for e in live] == ["now"]
