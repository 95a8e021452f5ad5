"""TaskService over a real channel, on SQLite and PostgreSQL: the error table of SPEC §3
for tasks, the lifecycle of §4, and the events every change writes."""

from __future__ import annotations

import json
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2

from agenttasks.server.storage.models import TaskEvent
from agenttasks.v1 import agents_pb2, projects_pb2
from agenttasks.v1 import tasks_pb2 as pb

from .helpers import Client, TeamWorld, raises

TODO = pb.TASK_STATUS_TODO
IN_PROGRESS = pb.TASK_STATUS_IN_PROGRESS
DONE = pb.TASK_STATUS_DONE
CANCELLED = pb.TASK_STATUS_CANCELLED
LOW, NORMAL, HIGH = pb.TASK_PRIORITY_LOW, pb.TASK_PRIORITY_NORMAL, pb.TASK_PRIORITY_HIGH

TOKEN_MESSAGE = "Invalid or missing token"
ALREADY_CLAIMED = "Task is already claimed by another agent"
NOT_ASSIGNED = "Task is assigned to another agent"
STALE_ETAG = "The etag does not match the current task; read it again"


@dataclass
class Board:
    """A team with one project and two agents, Alice and Bob."""

    world: TeamWorld
    project: projects_pb2.Project
    alice: agents_pb2.Agent
    alice_client: Client
    bob: agents_pb2.Agent
    bob_client: Client

    @property
    def admin(self) -> Client:
        return self.world.admin

    def create(self, client: Client | None = None, **fields) -> pb.Task:
        fields.setdefault("project_id", self.project.id)
        fields.setdefault("title", "Write the report")
        request = pb.CreateTaskRequest(**fields)
        return (client or self.admin).tasks.CreateTask(request).task

    def get(self, task_id: str) -> pb.Task:
        return self.admin.tasks.GetTask(pb.GetTaskRequest(task_id=task_id)).task

    def claimed_by_alice(self, **fields) -> pb.Task:
        task = self.create(**fields)
        return claim(self.alice_client, task.id)

    def in_status(self, status: int) -> pb.Task:
        """A task in `status`; every status but todo is held by Alice."""
        if status == TODO:
            return self.create()
        task = self.claimed_by_alice()
        if status == DONE:
            return complete(self.alice_client, task.id, "finished")
        if status == CANCELLED:
            return move(self.alice_client, task.id, CANCELLED)
        return task


@pytest.fixture
def board(world) -> Board:
    alice, alice_client = world.agent("Alice")
    bob, bob_client = world.agent("Bob")
    return Board(world, world.project("Board"), alice, alice_client, bob, bob_client)


def claim(client: Client, task_id: str, agent_id: str = "") -> pb.Task:
    return client.tasks.ClaimTask(pb.ClaimTaskRequest(task_id=task_id, agent_id=agent_id)).task


def complete(client: Client, task_id: str, result: str = "", request_id: str = "") -> pb.Task:
    request = pb.CompleteTaskRequest(task_id=task_id, result=result, request_id=request_id)
    return client.tasks.CompleteTask(request).task


def move(client: Client, task_id: str, status: int, etag: str = "") -> pb.Task:
    request = pb.MoveTaskRequest(task_id=task_id, status=status, etag=etag)
    return client.tasks.MoveTask(request).task


def update(client: Client, task: pb.Task, *paths: str) -> pb.Task:
    request = pb.UpdateTaskRequest(task=task, update_mask=field_mask_pb2.FieldMask(paths=paths))
    return client.tasks.UpdateTask(request).task


def list_tasks(client: Client, **filters) -> list[pb.Task]:
    """Every task the filters match, through all pages."""
    found, token = [], ""
    while True:
        response = client.tasks.ListTasks(pb.ListTasksRequest(page_token=token, **filters))
        found.extend(response.tasks)
        token = response.next_page_token
        if not token:
            return found


def ids(tasks) -> list[str]:
    return [task.id for task in tasks]


def events(task_id: str) -> list[tuple[str, str | None]]:
    """(event, acting agent id) of every task_event row of the task, oldest first."""
    rows = TaskEvent.select().where(TaskEvent.task_id == task_id).order_by(TaskEvent.event_id)
    return [(row.event, row.agent_id) for row in rows]


def deactivate(world, agent_id: str) -> None:
    request = agents_pb2.UpdateAgentRequest(
        agent=agents_pb2.Agent(id=agent_id, status=agents_pb2.AGENT_STATUS_INACTIVE),
        update_mask=field_mask_pb2.FieldMask(paths=["status"]),
    )
    world.admin.agents.UpdateAgent(request)


# --- creating and reading ------------------------------------------------------------------


def test_a_new_task_starts_todo_unassigned_with_normal_priority_and_a_trimmed_title(board):
    task = board.create(title="  Write the report \n", description="Two pages")

    assert task.title == "Write the report"
    assert task.description == "Two pages"
    assert (task.status, task.priority, task.assigned_agent_id) == (TODO, NORMAL, "")
    assert (task.team_id, task.project_id) == (board.world.id, board.project.id)
    assert task.id[0].isalpha() and task.id.isalnum() and task.id == task.id.lower()
    assert task.etag
    assert task.created_at == task.updated_at
    assert not task.HasField("due_time")
    assert board.get(task.id) == task


def test_a_task_keeps_the_priority_assignee_and_due_time_it_was_created_with(board):
    due = timestamp_pb2.Timestamp(seconds=1_900_000_000)

    task = board.create(priority=HIGH, assigned_agent_id=board.alice.id, due_time=due)

    assert (task.priority, task.assigned_agent_id, task.due_time) == (HIGH, board.alice.id, due)
    assert board.get(task.id) == task


def test_an_agent_token_can_create_and_read_tasks(board):
    task = board.create(board.alice_client, title="Found a bug")

    fetched = board.alice_client.tasks.GetTask(pb.GetTaskRequest(task_id=task.id)).task

    assert fetched == task
    assert events(task.id) == [("task.created", board.alice.id)]


# --- UNAUTHORIZED --------------------------------------------------------------------------

REQUESTS = {
    "ListTasks": lambda b, task: pb.ListTasksRequest(),
    "GetTask": lambda b, task: pb.GetTaskRequest(task_id=task.id),
    "CreateTask": lambda b, task: pb.CreateTaskRequest(project_id=b.project.id, title="New"),
    "UpdateTask": lambda b, task: pb.UpdateTaskRequest(task=pb.Task(id=task.id, title="Changed")),
    "ClaimTask": lambda b, task: pb.ClaimTaskRequest(task_id=task.id, agent_id=b.alice.id),
    "CompleteTask": lambda b, task: pb.CompleteTaskRequest(task_id=task.id, result="x"),
    "MoveTask": lambda b, task: pb.MoveTaskRequest(task_id=task.id, status=CANCELLED),
}


def _bad_credentials(board: Board) -> dict[str, Client]:
    channel = board.world.channel
    inactive, inactive_client = board.world.agent("Retired")
    deactivate(board.world, inactive.id)
    revoked, revoked_client = board.world.agent("Revoked")
    board.admin.agents.RevokeAgentToken(agents_pb2.RevokeAgentTokenRequest(agent_id=revoked.id))
    return {
        "no header": Client(channel, None),
        "wrong scheme": Client(channel, board.world.key, scheme="Basic"),
        "malformed token": Client(channel, "tk_not-hex"),
        "unknown token": Client(channel, "tk_" + "0" * 64),
        "inactive agent": inactive_client,
        "revoked token": revoked_client,
    }


@pytest.mark.parametrize("rpc", sorted(REQUESTS))
def test_every_task_call_without_a_valid_token_is_unauthorized_and_changes_nothing(board, rpc):
    task = board.create()

    for name, client in _bad_credentials(board).items():
        request = REQUESTS[rpc](board, task)
        body = raises("UNAUTHORIZED", getattr(client.tasks, rpc), request, message=TOKEN_MESSAGE)
        assert body.violations == [], name

    assert board.get(task.id) == task
    assert len(list_tasks(board.admin)) == 1
    assert events(task.id) == [("task.created", None)]


# --- FORBIDDEN -----------------------------------------------------------------------------


def test_an_agent_naming_another_agent_in_claim_task_is_forbidden(board):
    task = board.create()

    raises(
        "FORBIDDEN",
        board.alice_client.tasks.ClaimTask,
        pb.ClaimTaskRequest(task_id=task.id, agent_id=board.bob.id),
        message="Agent tokens cannot claim tasks for another agent",
    )
    assert board.get(task.id) == task


def test_an_agent_naming_another_agent_is_forbidden_before_the_task_is_looked_up(board):
    raises(
        "FORBIDDEN",
        board.alice_client.tasks.ClaimTask,
        pb.ClaimTaskRequest(task_id="cmissing", agent_id=board.bob.id),
    )


def test_an_agent_may_name_itself_in_claim_task(board):
    task = board.create()

    claimed = claim(board.alice_client, task.id, agent_id=board.alice.id)

    assert (claimed.status, claimed.assigned_agent_id) == (IN_PROGRESS, board.alice.id)


@pytest.mark.parametrize("key", ["team key", "agent token"])
def test_naming_another_team_is_forbidden_even_when_the_fields_are_invalid(board, other_world, key):
    client = board.admin if key == "team key" else board.alice_client
    message = "team_id does not match the caller's team"

    raises(
        "FORBIDDEN",
        client.tasks.ListTasks,
        pb.ListTasksRequest(team_id=other_world.id),
        message=message,
    )
    raises(
        "FORBIDDEN",
        client.tasks.CreateTask,
        pb.CreateTaskRequest(team_id=other_world.id, project_id=board.project.id, title=""),
        message=message,
    )
    assert list_tasks(board.admin) == []


def test_naming_your_own_team_is_the_same_as_naming_none(board):
    task = board.create(team_id=board.world.id)

    assert list_tasks(board.admin, team_id=board.world.id) == [task]


# --- NOT_FOUND -----------------------------------------------------------------------------

BY_ID = {
    "GetTask": lambda b, task_id: pb.GetTaskRequest(task_id=task_id),
    "UpdateTask": lambda b, task_id: pb.UpdateTaskRequest(task=pb.Task(id=task_id, title="New")),
    # Naming Alice, which both her token and the team key may do.
    "ClaimTask": lambda b, task_id: pb.ClaimTaskRequest(task_id=task_id, agent_id=b.alice.id),
    "CompleteTask": lambda b, task_id: pb.CompleteTaskRequest(task_id=task_id, result="x"),
    "MoveTask": lambda b, task_id: pb.MoveTaskRequest(task_id=task_id, status=CANCELLED),
}


@pytest.mark.parametrize("rpc", sorted(BY_ID))
def test_a_missing_task_and_another_teams_task_are_both_not_found(board, other_world, rpc):
    theirs = other_world.admin.tasks.CreateTask(
        pb.CreateTaskRequest(project_id=other_world.project().id, title="Theirs")
    ).task
    _, their_agent = other_world.agent()
    their_claimed = claim(their_agent, theirs.id)

    for client in (board.admin, board.alice_client):
        for task_id in ("cdoesnotexist0000000000000", theirs.id):
            raises(
                "NOT_FOUND",
                getattr(client.tasks, rpc),
                BY_ID[rpc](board, task_id),
                message=f"task {task_id!r} not found",
            )

    stored = other_world.admin.tasks.GetTask(pb.GetTaskRequest(task_id=theirs.id)).task
    assert stored == their_claimed


def test_another_teams_tasks_are_never_listed(board, other_world):
    mine = board.create()
    other_world.admin.tasks.CreateTask(
        pb.CreateTaskRequest(project_id=other_world.project().id, title="Theirs")
    )

    assert list_tasks(board.admin) == [mine]
    assert list_tasks(board.alice_client) == [mine]


def test_creating_a_task_in_another_teams_project_or_for_its_agent_is_not_found(board, other_world):
    their_project = other_world.project()
    their_agent, _ = other_world.agent()

    raises(
        "NOT_FOUND",
        board.admin.tasks.CreateTask,
        pb.CreateTaskRequest(project_id=their_project.id, title="Mine"),
        message=f"project {their_project.id!r} not found",
    )
    raises(
        "NOT_FOUND",
        board.admin.tasks.CreateTask,
        pb.CreateTaskRequest(
            project_id=board.project.id, title="Mine", assigned_agent_id=their_agent.id
        ),
        message=f"agent {their_agent.id!r} not found",
    )
    assert list_tasks(board.admin) == []
    assert list_tasks(other_world.admin) == []


def test_moving_a_task_to_another_teams_project_or_agent_is_not_found(board, other_world):
    task = board.create()
    their_project = other_world.project()
    their_agent, _ = other_world.agent()

    raises(
        "NOT_FOUND",
        board.admin.tasks.UpdateTask,
        pb.UpdateTaskRequest(task=pb.Task(id=task.id, project_id=their_project.id)),
        message=f"project {their_project.id!r} not found",
    )
    raises(
        "NOT_FOUND",
        board.admin.tasks.UpdateTask,
        pb.UpdateTaskRequest(task=pb.Task(id=task.id, assigned_agent_id=their_agent.id)),
        message=f"agent {their_agent.id!r} not found",
    )
    assert board.get(task.id) == task


def test_a_team_key_claiming_for_another_teams_agent_is_not_found(board, other_world):
    task = board.create()
    their_agent, _ = other_world.agent()

    raises(
        "NOT_FOUND",
        board.admin.tasks.ClaimTask,
        pb.ClaimTaskRequest(task_id=task.id, agent_id=their_agent.id),
        message=f"agent {their_agent.id!r} not found",
    )
    assert board.get(task.id) == task


# --- VALIDATION_ERROR ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "violations", "message"),
    [
        ({"title": ""}, ["title"], "title: must not be empty"),
        ({"title": " \t\n "}, ["title"], "title: must not be empty"),
        (
            {"title": "x" * 501},
            ["title"],
            "title: must be at most 500 characters after trimming",
        ),
        (
            {"description": "d" * 50_001},
            ["description"],
            "description: must be at most 50,000 characters",
        ),
        ({"project_id": ""}, ["project_id"], "project_id: is required"),
        (
            {"priority": 9},
            ["priority"],
            "priority: must be TASK_PRIORITY_LOW, TASK_PRIORITY_NORMAL or TASK_PRIORITY_HIGH",
        ),
        (
            {"title": "", "description": "d" * 50_001},
            ["title", "description"],
            "title: must not be empty; description: must be at most 50,000 characters",
        ),
    ],
)
def test_creating_a_task_with_bad_fields_is_a_validation_error(board, fields, violations, message):
    body = raises("VALIDATION_ERROR", board.create, message=message, **{"title": "Fine", **fields})

    assert body.violations == violations
    assert list_tasks(board.admin) == []


def test_titles_and_descriptions_at_their_limits_are_accepted(board):
    task = board.create(title="  " + "t" * 500 + "  ", description="d" * 50_000)

    assert task.title == "t" * 500
    assert len(task.description) == 50_000


def test_fields_are_validated_before_the_project_is_looked_up(board):
    body = raises("VALIDATION_ERROR", board.create, project_id="cnoproject", title="")

    assert body.violations == ["title"]


@pytest.mark.parametrize(
    ("task_fields", "violation", "message"),
    [
        ({"title": "  "}, "task.title", "task.title: must not be empty"),
        (
            {"title": "x" * 501},
            "task.title",
            "task.title: must be at most 500 characters after trimming",
        ),
        (
            {"description": "d" * 50_001},
            "task.description",
            "task.description: must be at most 50,000 characters",
        ),
        (
            {"priority": 7},
            "task.priority",
            "task.priority: must be TASK_PRIORITY_LOW, TASK_PRIORITY_NORMAL or TASK_PRIORITY_HIGH",
        ),
    ],
)
def test_updating_a_task_with_bad_fields_is_a_validation_error(
    board, task_fields, violation, message
):
    task = board.create()

    body = raises(
        "VALIDATION_ERROR",
        board.admin.tasks.UpdateTask,
        pb.UpdateTaskRequest(task=pb.Task(id=task.id, **task_fields)),
        message=message,
    )

    assert body.violations == [violation]
    assert board.get(task.id) == task
    # Validation comes before the lookup: a missing task with a bad field is the same error.
    raises(
        "VALIDATION_ERROR",
        board.admin.tasks.UpdateTask,
        pb.UpdateTaskRequest(task=pb.Task(id="cmissing", **task_fields)),
        message=message,
    )


def test_a_result_over_one_mebibyte_of_utf8_is_a_validation_error(board):
    task = board.claimed_by_alice()
    # 600,000 characters, but 1.2 MB of UTF-8: the limit is on bytes.
    too_big = "é" * 600_000

    body = raises(
        "VALIDATION_ERROR",
        board.alice_client.tasks.CompleteTask,
        pb.CompleteTaskRequest(task_id=task.id, result=too_big),
        message="result: must be at most 1,048,576 bytes of UTF-8",
    )

    assert body.violations == ["result"]
    assert board.get(task.id) == task
    done = complete(board.alice_client, task.id, "r" * (1024 * 1024))
    assert (done.status, len(done.result)) == (DONE, 1024 * 1024)


@pytest.mark.parametrize(
    ("rpc", "request_for", "violation"),
    [
        ("ListTasks", lambda task: pb.ListTasksRequest(status=9), "status"),
        ("ListTasks", lambda task: pb.ListTasksRequest(priority=9), "priority"),
        ("MoveTask", lambda task: pb.MoveTaskRequest(task_id=task.id, status=9), "status"),
        ("MoveTask", lambda task: pb.MoveTaskRequest(task_id="cmissing", status=9), "status"),
    ],
)
def test_an_unknown_enum_value_is_a_validation_error(board, rpc, request_for, violation):
    task = board.create()

    body = raises(
        "VALIDATION_ERROR",
        getattr(board.admin.tasks, rpc),
        request_for(task),
        message=f"{violation}: unknown value 9",
    )

    assert body.violations == [violation]
    assert board.get(task.id) == task


def test_moving_to_an_unspecified_status_is_a_validation_error(board):
    task = board.create()

    body = raises(
        "VALIDATION_ERROR",
        board.admin.tasks.MoveTask,
        pb.MoveTaskRequest(task_id=task.id),
        message="status: must be a task status",
    )

    assert body.violations == ["status"]


def test_a_negative_page_size_is_a_validation_error(board):
    body = raises(
        "VALIDATION_ERROR",
        board.admin.tasks.ListTasks,
        pb.ListTasksRequest(page_size=-1),
        message="page_size: must not be negative",
    )

    assert body.violations == ["page_size"]


def test_a_page_token_that_this_listing_did_not_return_is_a_validation_error(board, other_world):
    for _ in range(3):
        board.create()
    other_world_project = other_world.project()
    for _ in range(3):
        other_world.admin.tasks.CreateTask(
            pb.CreateTaskRequest(project_id=other_world_project.id, title="Theirs")
        )
    todo_token = board.admin.tasks.ListTasks(
        pb.ListTasksRequest(page_size=1, status=TODO)
    ).next_page_token
    their_token = other_world.admin.tasks.ListTasks(
        pb.ListTasksRequest(page_size=1)
    ).next_page_token
    assert todo_token and their_token

    for token, why in [
        ("not a token", "is not a token this list returned"),
        ("eyJhIjoxfQ", "is not a token this list returned"),  # base64 of {"a":1}
        (todo_token[:-3], "is not a token this list returned"),
        (todo_token, "was issued for a request with other filters"),
        (their_token, "was issued for a request with other filters"),
    ]:
        body = raises(
            "VALIDATION_ERROR",
            board.admin.tasks.ListTasks,
            pb.ListTasksRequest(page_size=1, page_token=token),
            message=f"page_token: {why}",
        )
        assert body.violations == ["page_token"]


def test_a_team_key_claiming_without_naming_an_agent_is_a_validation_error(board):
    task = board.create()

    body = raises(
        "VALIDATION_ERROR",
        board.admin.tasks.ClaimTask,
        pb.ClaimTaskRequest(task_id=task.id),
        message="agent_id: is required when a Team API Key claims a task",
    )

    assert body.violations == ["agent_id"]
    assert board.get(task.id) == task


def test_a_team_key_moving_an_unassigned_task_to_in_progress_is_a_validation_error(board):
    task = board.create()

    body = raises(
        "VALIDATION_ERROR",
        board.admin.tasks.MoveTask,
        pb.MoveTaskRequest(task_id=task.id, status=IN_PROGRESS),
        message="status: a Team API Key starts a task with ClaimTask and agent_id",
    )

    assert body.violations == ["status"]
    assert board.get(task.id) == task
    assert events(task.id) == [("task.created", None)]


@pytest.mark.parametrize(
    ("rpc", "request_", "violation"),
    [
        ("GetTask", pb.GetTaskRequest(), "task_id"),
        ("UpdateTask", pb.UpdateTaskRequest(task=pb.Task(title="New")), "task.id"),
        ("ClaimTask", pb.ClaimTaskRequest(agent_id="cagent"), "task_id"),
        ("CompleteTask", pb.CompleteTaskRequest(result="x"), "task_id"),
        ("MoveTask", pb.MoveTaskRequest(status=CANCELLED), "task_id"),
    ],
)
def test_a_call_without_the_task_id_is_a_validation_error(board, rpc, request_, violation):
    body = raises(
        "VALIDATION_ERROR",
        getattr(board.admin.tasks, rpc),
        request_,
        message=f"{violation}: is required",
    )

    assert body.violations == [violation]


def test_every_bad_field_of_a_claim_is_reported_at_once(board):
    body = raises("VALIDATION_ERROR", board.admin.tasks.ClaimTask, pb.ClaimTaskRequest())

    assert body.violations == ["agent_id", "task_id"]


@pytest.mark.parametrize(
    ("rpc", "request_for", "violation"),
    [
        (
            "CreateTask",
            lambda b, task: pb.CreateTaskRequest(project_id=b.project.id, title="a\x00b"),
            "title",
        ),
        (
            "CreateTask",
            lambda b, task: pb.CreateTaskRequest(
                project_id=b.project.id, title="a", description="\x00"
            ),
            "description",
        ),
        (
            "CreateTask",
            lambda b, task: pb.CreateTaskRequest(
                project_id=b.project.id, title="a", request_id="r\x00"
            ),
            "request_id",
        ),
        (
            "UpdateTask",
            lambda b, task: pb.UpdateTaskRequest(task=pb.Task(id=task.id, title="\x00")),
            "task.title",
        ),
        (
            "UpdateTask",
            lambda b, task: pb.UpdateTaskRequest(task=pb.Task(id=task.id, description="\x00")),
            "task.description",
        ),
        (
            "CompleteTask",
            lambda b, task: pb.CompleteTaskRequest(task_id=task.id, result="r\x00"),
            "result",
        ),
        (
            "CompleteTask",
            lambda b, task: pb.CompleteTaskRequest(task_id=task.id, request_id="\x00"),
            "request_id",
        ),
    ],
)
def test_text_with_a_nul_character_is_a_validation_error_on_every_backend(
    board, rpc, request_for, violation
):
    # PostgreSQL cannot store NUL in text while SQLite can: both refuse it the same way.
    task = board.claimed_by_alice()

    body = raises(
        "VALIDATION_ERROR",
        getattr(board.admin.tasks, rpc),
        request_for(board, task),
        message=f"{violation}: must not contain NUL characters",
    )

    assert body.violations == [violation]
    assert ids(list_tasks(board.admin)) == [task.id]
    assert board.get(task.id) == task


@pytest.mark.parametrize("bad_id", ["c\x00", "C-UPPER", "x" * 40, "1abc", "c d"])
def test_an_id_no_resource_can_have_is_not_found_on_every_backend(board, bad_id):
    task = board.create()

    for rpc, make in BY_ID.items():
        raises(
            "NOT_FOUND",
            getattr(board.admin.tasks, rpc),
            make(board, bad_id),
            message=f"task {bad_id!r} not found",
        )
    for request_id in ("", "retry-1"):
        raises(
            "NOT_FOUND",
            board.admin.tasks.CompleteTask,
            pb.CompleteTaskRequest(task_id=bad_id, request_id=request_id),
        )
    raises(
        "NOT_FOUND",
        board.admin.tasks.CreateTask,
        pb.CreateTaskRequest(project_id=bad_id, title="x"),
        message=f"project {bad_id!r} not found",
    )
    raises(
        "NOT_FOUND",
        board.admin.tasks.CreateTask,
        pb.CreateTaskRequest(project_id=board.project.id, title="x", assigned_agent_id=bad_id),
        message=f"agent {bad_id!r} not found",
    )
    raises(
        "NOT_FOUND",
        board.admin.tasks.ClaimTask,
        pb.ClaimTaskRequest(task_id=task.id, agent_id=bad_id),
        message=f"agent {bad_id!r} not found",
    )
    raises(
        "NOT_FOUND",
        board.admin.tasks.UpdateTask,
        pb.UpdateTaskRequest(task=pb.Task(id=task.id, project_id=bad_id)),
        message=f"project {bad_id!r} not found",
    )
    # As a filter it matches nothing.
    assert list_tasks(board.admin, project_id=bad_id) == []
    assert list_tasks(board.admin, agent_id=bad_id) == []
    assert board.get(task.id) == task


# --- claiming: TASK_ALREADY_CLAIMED, TASK_NOT_CLAIMABLE ------------------------------------


def test_claiming_a_todo_task_puts_it_in_progress_for_the_calling_agent(board):
    task = board.create()

    claimed = claim(board.alice_client, task.id)

    assert (claimed.status, claimed.assigned_agent_id) == (IN_PROGRESS, board.alice.id)
    assert claimed.etag != task.etag
    assert claimed.updated_at.ToMicroseconds() >= task.updated_at.ToMicroseconds()
    assert board.get(task.id) == claimed
    assert events(task.id) == [("task.created", None), ("task.claimed", board.alice.id)]


def test_a_second_agent_claiming_a_held_task_gets_task_already_claimed(board):
    held = board.claimed_by_alice()

    raises(
        "TASK_ALREADY_CLAIMED",
        board.bob_client.tasks.ClaimTask,
        pb.ClaimTaskRequest(task_id=held.id),
        message=ALREADY_CLAIMED,
    )
    raises(
        "TASK_ALREADY_CLAIMED",
        board.admin.tasks.ClaimTask,
        pb.ClaimTaskRequest(task_id=held.id, agent_id=board.bob.id),
        message=ALREADY_CLAIMED,
    )
    assert board.get(held.id) == held


def test_claiming_a_task_you_already_hold_returns_it_unchanged(board):
    held = board.claimed_by_alice()

    again = claim(board.alice_client, held.id)
    for_alice = claim(board.admin, held.id, agent_id=board.alice.id)

    assert again == held
    assert for_alice == held
    assert board.get(held.id) == held
    assert events(held.id) == [("task.created", None), ("task.claimed", board.alice.id)]


def test_a_team_key_claims_on_behalf_of_the_agent_it_names(board):
    task = board.create()

    claimed = claim(board.admin, task.id, agent_id=board.bob.id)

    assert (claimed.status, claimed.assigned_agent_id) == (IN_PROGRESS, board.bob.id)
    # The team key acted: the event has no acting agent.
    assert events(task.id) == [("task.created", None), ("task.claimed", None)]
    # Bob now holds it and may complete it.
    assert complete(board.bob_client, task.id, "ok").status == DONE


@pytest.mark.parametrize("status", [DONE, CANCELLED])
def test_a_done_or_cancelled_task_is_not_claimable(board, status):
    task = board.in_status(status)
    word = pb.TaskStatus.Name(status).removeprefix("TASK_STATUS_").lower()

    for client in (board.alice_client, board.bob_client):
        raises(
            "TASK_NOT_CLAIMABLE",
            client.tasks.ClaimTask,
            pb.ClaimTaskRequest(task_id=task.id),
            message=f"Task is {word} and cannot be claimed",
        )
    assert board.get(task.id) == task


def test_a_todo_task_assigned_to_another_agent_is_not_claimable_but_its_assignee_claims_it(board):
    task = board.create(assigned_agent_id=board.alice.id)

    raises(
        "TASK_NOT_CLAIMABLE",
        board.bob_client.tasks.ClaimTask,
        pb.ClaimTaskRequest(task_id=task.id),
        message="Task is assigned to another agent",
    )
    raises(
        "TASK_NOT_CLAIMABLE",
        board.admin.tasks.ClaimTask,
        pb.ClaimTaskRequest(task_id=task.id, agent_id=board.bob.id),
        message="Task is assigned to another agent",
    )
    assert board.get(task.id) == task

    claimed = claim(board.alice_client, task.id)
    assert (claimed.status, claimed.assigned_agent_id) == (IN_PROGRESS, board.alice.id)


# --- completing: TASK_NOT_IN_PROGRESS, NOT_ASSIGNED_AGENT ----------------------------------


def test_the_assignee_completes_its_task_with_a_result(board):
    held = board.claimed_by_alice()

    done = complete(board.alice_client, held.id, "All tests pass")

    assert (done.status, done.result, done.assigned_agent_id) == (
        DONE,
        "All tests pass",
        board.alice.id,
    )
    assert board.get(held.id) == done
    assert events(held.id)[-1] == ("task.completed", board.alice.id)


def test_a_team_key_may_complete_any_task_in_progress(board):
    held = board.claimed_by_alice()

    done = complete(board.admin, held.id, "closed by a person")

    assert (done.status, done.result, done.assigned_agent_id) == (
        DONE,
        "closed by a person",
        board.alice.id,
    )
    assert events(held.id)[-1] == ("task.completed", None)


def test_completing_another_agents_task_is_not_assigned_agent(board):
    held = board.claimed_by_alice()

    raises(
        "NOT_ASSIGNED_AGENT",
        board.bob_client.tasks.CompleteTask,
        pb.CompleteTaskRequest(task_id=held.id, result="mine now"),
        message=NOT_ASSIGNED,
    )
    assert board.get(held.id) == held


@pytest.mark.parametrize("status", [TODO, DONE, CANCELLED])
def test_completing_a_task_that_is_not_in_progress_is_task_not_in_progress(board, status):
    task = board.in_status(status)
    word = pb.TaskStatus.Name(status).removeprefix("TASK_STATUS_").lower()

    for client in (board.admin, board.alice_client):
        raises(
            "TASK_NOT_IN_PROGRESS",
            client.tasks.CompleteTask,
            pb.CompleteTaskRequest(task_id=task.id, result="again"),
            message=f"Task is {word}, not in_progress",
        )
    assert board.get(task.id) == task


def test_completing_a_done_task_held_by_another_agent_is_task_not_in_progress(board):
    # The state check comes before the assignee check.
    done = board.in_status(DONE)

    raises(
        "TASK_NOT_IN_PROGRESS",
        board.bob_client.tasks.CompleteTask,
        pb.CompleteTaskRequest(task_id=done.id, result="late"),
        message="Task is done, not in_progress",
    )
    assert board.get(done.id) == done


# --- MoveTask ------------------------------------------------------------------------------

NAMES = {TODO: "todo", IN_PROGRESS: "in_progress", DONE: "done", CANCELLED: "cancelled"}
# (from, to) -> the events the move writes; pairs not listed are INVALID_TRANSITION.
ALLOWED = {
    (TODO, IN_PROGRESS): ["task.moved"],
    (TODO, CANCELLED): ["task.moved", "task.cancelled"],
    (IN_PROGRESS, TODO): ["task.moved"],
    (IN_PROGRESS, DONE): ["task.moved", "task.completed"],
    (IN_PROGRESS, CANCELLED): ["task.moved", "task.cancelled"],
    (DONE, TODO): ["task.moved"],
    (CANCELLED, TODO): ["task.moved"],
}


@pytest.mark.parametrize("source", list(NAMES), ids=NAMES.get)
@pytest.mark.parametrize("target", list(NAMES), ids=NAMES.get)
def test_move_task_follows_the_table_of_allowed_moves(board, source, target):
    task = board.in_status(source)
    before = events(task.id)

    if source == target:
        assert move(board.alice_client, task.id, target) == task
        assert events(task.id) == before
    elif (source, target) in ALLOWED:
        moved = move(board.alice_client, task.id, target)
        assert moved.status == target
        if target == TODO:
            assert moved.assigned_agent_id == ""  # giving work back clears the assignee
        else:
            # Starting assigns the mover; done and cancelled keep the assignee (Alice,
            # except for a cancelled task nobody had claimed).
            expected = "" if source == TODO and target == CANCELLED else board.alice.id
            assert moved.assigned_agent_id == expected
        assert moved.etag != task.etag
        assert board.get(task.id) == moved
        written = [(name, board.alice.id) for name in ALLOWED[source, target]]
        assert events(task.id) == before + written
    else:
        raises(
            "INVALID_TRANSITION",
            board.alice_client.tasks.MoveTask,
            pb.MoveTaskRequest(task_id=task.id, status=target),
            message=f"Cannot move a task from {NAMES[source]} to {NAMES[target]}",
        )
        assert board.get(task.id) == task
        assert events(task.id) == before


def test_moving_a_done_task_back_to_todo_makes_it_claimable_by_anyone(board):
    done = board.in_status(DONE)

    reopened = move(board.admin, done.id, TODO)
    claimed = claim(board.bob_client, done.id)

    assert (reopened.status, reopened.assigned_agent_id) == (TODO, "")
    assert (claimed.status, claimed.assigned_agent_id) == (IN_PROGRESS, board.bob.id)


def test_a_team_key_moves_any_task_and_its_events_have_no_acting_agent(board):
    held = board.claimed_by_alice()

    back = move(board.admin, held.id, TODO)
    cancelled = move(board.admin, held.id, CANCELLED)

    assert (back.status, back.assigned_agent_id) == (TODO, "")
    assert cancelled.status == CANCELLED
    assert events(held.id)[-3:] == [
        ("task.moved", None),
        ("task.moved", None),
        ("task.cancelled", None),
    ]


def test_a_team_key_may_start_a_task_that_is_already_assigned_to_an_agent(board):
    task = board.create(assigned_agent_id=board.alice.id)

    started = move(board.admin, task.id, IN_PROGRESS)

    assert (started.status, started.assigned_agent_id) == (IN_PROGRESS, board.alice.id)


@pytest.mark.parametrize("target", [TODO, DONE, CANCELLED], ids=NAMES.get)
def test_an_agent_moving_a_task_another_agent_holds_is_not_assigned_agent(board, target):
    held = board.claimed_by_alice()

    raises(
        "NOT_ASSIGNED_AGENT",
        board.bob_client.tasks.MoveTask,
        pb.MoveTaskRequest(task_id=held.id, status=target),
        message=NOT_ASSIGNED,
    )
    assert board.get(held.id) == held


def test_an_agent_may_not_move_a_todo_task_assigned_to_another_agent(board):
    task = board.create(assigned_agent_id=board.alice.id)

    for target in (IN_PROGRESS, CANCELLED):
        raises(
            "NOT_ASSIGNED_AGENT",
            board.bob_client.tasks.MoveTask,
            pb.MoveTaskRequest(task_id=task.id, status=target),
            message=NOT_ASSIGNED,
        )
    assert board.get(task.id) == task


def test_an_agent_may_not_reopen_a_done_task_another_agent_completed(board):
    done = board.in_status(DONE)

    raises(
        "NOT_ASSIGNED_AGENT",
        board.bob_client.tasks.MoveTask,
        pb.MoveTaskRequest(task_id=done.id, status=TODO),
        message=NOT_ASSIGNED,
    )
    assert board.get(done.id) == done


def test_an_agent_may_move_an_unassigned_task(board):
    task = board.create()

    cancelled = move(board.bob_client, task.id, CANCELLED)

    assert (cancelled.status, cancelled.assigned_agent_id) == (CANCELLED, "")


def test_an_invalid_transition_is_reported_before_the_assignee_check(board):
    done = board.in_status(DONE)

    raises(
        "INVALID_TRANSITION",
        board.bob_client.tasks.MoveTask,
        pb.MoveTaskRequest(task_id=done.id, status=CANCELLED),
        message="Cannot move a task from done to cancelled",
    )


# --- ETAG_MISMATCH -------------------------------------------------------------------------


def test_every_write_gives_the_task_a_new_etag(board):
    created = board.create()
    updated = update(board.admin, pb.Task(id=created.id, title="Renamed"), "title")
    claimed = claim(board.alice_client, created.id)
    done = complete(board.alice_client, created.id, "ok")
    reopened = move(board.alice_client, created.id, TODO)

    etags = [t.etag for t in (created, updated, claimed, done, reopened)]
    assert len(set(etags)) == len(etags)


def test_update_task_with_a_stale_etag_is_etag_mismatch_and_with_the_current_one_succeeds(board):
    task = board.create()
    renamed = update(board.admin, pb.Task(id=task.id, title="First", etag=task.etag), "title")

    raises(
        "ETAG_MISMATCH",
        board.admin.tasks.UpdateTask,
        pb.UpdateTaskRequest(task=pb.Task(id=task.id, title="Second", etag=task.etag)),
        message=STALE_ETAG,
    )
    assert board.get(task.id) == renamed

    again = update(board.admin, pb.Task(id=task.id, title="Second", etag=renamed.etag), "title")
    assert again.title == "Second"


def test_move_task_with_a_stale_etag_is_etag_mismatch_and_with_the_current_one_succeeds(board):
    task = board.create()
    held = claim(board.alice_client, task.id)

    raises(
        "ETAG_MISMATCH",
        board.alice_client.tasks.MoveTask,
        pb.MoveTaskRequest(task_id=task.id, status=CANCELLED, etag=task.etag),
        message=STALE_ETAG,
    )
    assert board.get(task.id) == held

    cancelled = move(board.alice_client, task.id, CANCELLED, etag=held.etag)
    assert cancelled.status == CANCELLED


def test_a_stale_etag_is_reported_before_the_assignee_check(board):
    task = board.create()
    held = claim(board.alice_client, task.id)

    raises(
        "ETAG_MISMATCH",
        board.bob_client.tasks.MoveTask,
        pb.MoveTaskRequest(task_id=task.id, status=TODO, etag=task.etag),
    )
    raises(
        "NOT_ASSIGNED_AGENT",
        board.bob_client.tasks.MoveTask,
        pb.MoveTaskRequest(task_id=task.id, status=TODO, etag=held.etag),
    )


# --- UpdateTask ----------------------------------------------------------------------------


def test_update_with_an_empty_mask_writes_the_fields_that_are_set(board):
    task = board.create(description="Keep me", priority=LOW)

    updated = update(board.admin, pb.Task(id=task.id, title="New title", priority=HIGH))

    assert (updated.title, updated.priority, updated.description) == ("New title", HIGH, "Keep me")
    assert updated.created_at == task.created_at
    assert updated.updated_at.ToMicroseconds() >= task.updated_at.ToMicroseconds()
    assert board.get(task.id) == updated
    assert events(task.id) == [("task.created", None), ("task.updated", None)]


def test_update_with_explicit_paths_writes_only_those_paths(board):
    task = board.create(description="Old", priority=LOW)

    updated = update(
        board.admin,
        pb.Task(id=task.id, title="Ignored", description="New", priority=HIGH),
        "description",
    )

    assert (updated.title, updated.description, updated.priority) == (task.title, "New", LOW)


def test_update_with_an_explicit_path_can_clear_a_field(board):
    due = timestamp_pb2.Timestamp(seconds=1_900_000_000)
    task = board.create(description="Old", due_time=due, assigned_agent_id=board.alice.id)

    cleared = update(
        board.admin, pb.Task(id=task.id), "description", "due_time", "assigned_agent_id"
    )

    assert (cleared.description, cleared.assigned_agent_id) == ("", "")
    assert not cleared.HasField("due_time")


def test_update_sets_the_due_time_and_moves_the_task_to_another_project(board):
    other = board.world.project("Other")
    task = board.create()
    due = timestamp_pb2.Timestamp(seconds=1_900_000_000)

    updated = update(board.admin, pb.Task(id=task.id, due_time=due, project_id=other.id))

    assert (updated.due_time, updated.project_id) == (due, other.id)
    assert list_tasks(board.admin, project_id=other.id) == [updated]
    assert list_tasks(board.admin, project_id=board.project.id) == []


def test_update_ignores_the_status_and_output_fields_of_a_task_sent_back_whole(board):
    # A client reads a task, changes the title and sends the whole message back.
    held = board.claimed_by_alice()
    edited = pb.Task()
    edited.CopyFrom(held)
    edited.title = "Better title"
    edited.status = DONE
    edited.result = "sneaky"

    updated = board.alice_client.tasks.UpdateTask(pb.UpdateTaskRequest(task=edited)).task

    assert updated.title == "Better title"
    assert (updated.status, updated.result, updated.assigned_agent_id) == (
        IN_PROGRESS,
        "",
        board.alice.id,
    )


@pytest.mark.parametrize("path", ["status", "result", "id", "etag", "no_such_field"])
def test_update_with_a_path_that_is_not_writable_is_a_validation_error(board, path):
    task = board.create()

    body = raises(
        "VALIDATION_ERROR",
        board.admin.tasks.UpdateTask,
        pb.UpdateTaskRequest(
            task=pb.Task(id=task.id, title="x"),
            update_mask=field_mask_pb2.FieldMask(paths=["title", path]),
        ),
    )

    assert body.violations == ["update_mask"]
    assert body.message.startswith(f"update_mask: cannot update {path}; writable: ")
    assert board.get(task.id) == task


def test_the_assignee_is_writable_while_the_task_is_todo(board):
    task = board.create()

    assigned = update(board.admin, pb.Task(id=task.id, assigned_agent_id=board.alice.id))
    reassigned = update(board.admin, pb.Task(id=task.id, assigned_agent_id=board.bob.id))
    unassigned = update(board.admin, pb.Task(id=task.id), "assigned_agent_id")

    assert assigned.assigned_agent_id == board.alice.id
    assert reassigned.assigned_agent_id == board.bob.id
    assert unassigned.assigned_agent_id == ""


@pytest.mark.parametrize("status", [IN_PROGRESS, DONE, CANCELLED], ids=NAMES.get)
def test_changing_the_assignee_of_a_task_that_is_not_todo_is_invalid_transition(board, status):
    task = board.in_status(status)
    message = "assigned_agent_id can change only while the task is todo"

    raises(
        "INVALID_TRANSITION",
        board.admin.tasks.UpdateTask,
        pb.UpdateTaskRequest(task=pb.Task(id=task.id, assigned_agent_id=board.bob.id)),
        message=message,
    )
    raises(
        "INVALID_TRANSITION",
        board.admin.tasks.UpdateTask,
        pb.UpdateTaskRequest(
            task=pb.Task(id=task.id),
            update_mask=field_mask_pb2.FieldMask(paths=["assigned_agent_id"]),
        ),
        message=message,
    )
    assert board.get(task.id) == task
    # Other fields stay writable, and naming the current assignee again is no change.
    renamed = update(
        board.admin, pb.Task(id=task.id, title="Renamed", assigned_agent_id=board.alice.id)
    )
    assert (renamed.title, renamed.status, renamed.assigned_agent_id) == (
        "Renamed",
        status,
        board.alice.id,
    )


# --- listing -------------------------------------------------------------------------------


@pytest.fixture
def mixed_board(board):
    """Tasks in two projects, of every priority and status, some assigned."""
    other = board.world.project("Other")
    tasks = {
        "todo low": board.create(priority=LOW),
        "todo high other": board.create(priority=HIGH, project_id=other.id),
        "alice working": board.claimed_by_alice(),
        "for bob": board.create(assigned_agent_id=board.bob.id, project_id=other.id),
        "alice done high": board.create(priority=HIGH),
        "cancelled": board.create(),
    }
    claim(board.alice_client, tasks["alice done high"].id)
    complete(board.alice_client, tasks["alice done high"].id, "ok")
    move(board.admin, tasks["cancelled"].id, CANCELLED)
    return board, other, {name: board.get(task.id) for name, task in tasks.items()}


def test_list_tasks_returns_every_task_of_the_team_oldest_first(mixed_board):
    board, _, tasks = mixed_board

    listed = list_tasks(board.admin)

    assert listed == list(tasks.values())
    created = [task.created_at.ToMicroseconds() for task in listed]
    assert created == sorted(created)
    assert list_tasks(board.bob_client) == listed  # an agent sees all of its team's tasks


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"status": TODO}, ["todo low", "todo high other", "for bob"]),
        ({"status": IN_PROGRESS}, ["alice working"]),
        ({"status": DONE}, ["alice done high"]),
        ({"status": CANCELLED}, ["cancelled"]),
        ({"priority": HIGH}, ["todo high other", "alice done high"]),
        ({"priority": LOW}, ["todo low"]),
        ({"priority": NORMAL}, ["alice working", "for bob", "cancelled"]),
        ({"agent": "alice"}, ["alice working", "alice done high"]),
        ({"agent": "bob"}, ["for bob"]),
        ({"project": "other"}, ["todo high other", "for bob"]),
        ({"project": "board", "priority": HIGH}, ["alice done high"]),
        ({"agent": "alice", "status": IN_PROGRESS}, ["alice working"]),
        ({"status": TODO, "priority": HIGH, "project": "board"}, []),
    ],
)
def test_list_tasks_filters_by_status_project_assignee_and_priority(mixed_board, filters, expected):
    board, other, tasks = mixed_board
    request = dict(filters)
    if "agent" in request:
        request["agent_id"] = {"alice": board.alice.id, "bob": board.bob.id}[request.pop("agent")]
    if "project" in request:
        request["project_id"] = {"board": board.project.id, "other": other.id}[
            request.pop("project")
        ]

    assert ids(list_tasks(board.admin, **request)) == [tasks[name].id for name in expected]
    assert ids(list_tasks(board.alice_client, **request)) == [tasks[name].id for name in expected]


def test_list_tasks_pages_default_to_50_and_clamp_to_100(board):
    created = [board.create(title=f"task {n}") for n in range(120)]

    def page(size: int, token: str = "") -> pb.ListTasksResponse:
        return board.admin.tasks.ListTasks(pb.ListTasksRequest(page_size=size, page_token=token))

    default = page(0)
    assert ids(default.tasks) == ids(created[:50])
    assert default.next_page_token
    for size in (100, 101, 1000, 2**31 - 1):
        clamped = page(size)
        assert ids(clamped.tasks) == ids(created[:100]), size
        rest = page(size, clamped.next_page_token)
        assert (ids(rest.tasks), rest.next_page_token) == (ids(created[100:]), "")

    walked, token, sizes = [], "", []
    while True:
        response = page(37, token)
        walked.extend(response.tasks)
        sizes.append(len(response.tasks))
        token = response.next_page_token
        if not token:
            break
    assert sizes == [37, 37, 37, 9]
    assert ids(walked) == ids(created)


def test_the_last_page_has_an_empty_next_page_token(board):
    tasks = [board.create() for _ in range(3)]

    exact = board.admin.tasks.ListTasks(pb.ListTasksRequest(page_size=3))
    empty = board.admin.tasks.ListTasks(pb.ListTasksRequest(status=DONE))

    assert (ids(exact.tasks), exact.next_page_token) == (ids(tasks), "")
    assert (list(empty.tasks), empty.next_page_token) == ([], "")


# --- deactivating an agent -----------------------------------------------------------------


def test_deactivating_an_agent_returns_its_tasks_in_progress_to_todo(board):
    working = board.claimed_by_alice()
    also_working = board.claimed_by_alice()
    done = board.in_status(DONE)
    bobs = claim(board.bob_client, board.create().id)

    deactivate(board.world, board.alice.id)

    for task in (working, also_working):
        released = board.get(task.id)
        assert (released.status, released.assigned_agent_id) == (TODO, "")
        assert events(task.id)[-1] == ("task.moved", None)
        row = TaskEvent.select().where(TaskEvent.task_id == task.id).order_by(-TaskEvent.event_id)
        assert row.first().reason == "agent_deactivated"
        assert json.loads(row.first().payload)["status"] == "todo"
    assert board.get(done.id) == done
    assert board.get(bobs.id) == bobs
    # Anyone else can pick the work up at once; Alice cannot act any more.
    assert claim(board.bob_client, working.id).assigned_agent_id == board.bob.id
    raises(
        "UNAUTHORIZED",
        board.alice_client.tasks.ClaimTask,
        pb.ClaimTaskRequest(task_id=also_working.id),
        message=TOKEN_MESSAGE,
    )


# --- task_count ----------------------------------------------------------------------------


def test_a_projects_task_count_counts_all_of_its_tasks(board):
    other = board.world.project("Other")
    board.create()
    board.in_status(IN_PROGRESS)
    board.in_status(DONE)
    board.in_status(CANCELLED)
    board.create(project_id=other.id)

    def count(project_id: str) -> int:
        request = projects_pb2.GetProjectRequest(project_id=project_id)
        return board.admin.projects.GetProject(request).project.task_count

    assert (count(board.project.id), count(other.id)) == (4, 1)
    listed = board.admin.projects.ListProjects(projects_pb2.ListProjectsRequest()).projects
    assert {p.id: p.task_count for p in listed} == {board.project.id: 4, other.id: 1}


def test_an_agents_task_count_counts_the_open_tasks_assigned_to_it(board):
    board.create(assigned_agent_id=board.alice.id)  # todo, assigned
    board.in_status(IN_PROGRESS)
    board.in_status(DONE)
    board.in_status(CANCELLED)
    board.create()  # unassigned

    def count(agent_id: str) -> int:
        request = agents_pb2.GetAgentRequest(agent_id=agent_id)
        return board.admin.agents.GetAgent(request).agent.task_count

    assert (count(board.alice.id), count(board.bob.id)) == (2, 0)
    listed = board.alice_client.agents.ListAgents(agents_pb2.ListAgentsRequest()).agents
    assert {a.id: a.task_count for a in listed} == {board.alice.id: 2, board.bob.id: 0}


# --- idempotency ---------------------------------------------------------------------------


def test_create_task_retried_with_the_same_request_id_returns_the_first_task(board, other_world):
    first = board.create(title="Once", request_id="create-1")

    retry = board.create(title="Once", request_id="create-1")
    fresh = board.create(title="Twice", request_id="create-2")
    theirs = other_world.admin.tasks.CreateTask(
        pb.CreateTaskRequest(
            project_id=other_world.project().id, title="Theirs", request_id="create-1"
        )
    ).task

    assert retry == first
    assert fresh.id != first.id
    assert theirs.id != first.id  # request ids are per team
    assert ids(list_tasks(board.admin)) == [first.id, fresh.id]
    assert events(first.id) == [("task.created", None)]


def test_complete_task_retried_with_the_same_request_id_returns_the_completed_task(board):
    held = board.claimed_by_alice()
    first = complete(board.alice_client, held.id, "the answer", request_id="complete-1")

    retry = complete(board.alice_client, held.id, "the answer", request_id="complete-1")

    assert retry == first
    assert board.get(held.id) == first
    assert [name for name, _ in events(held.id)].count("task.completed") == 1
    # Without the request id the same call is a conflict.
    raises(
        "TASK_NOT_IN_PROGRESS",
        board.alice_client.tasks.CompleteTask,
        pb.CompleteTaskRequest(task_id=held.id, result="another answer"),
    )


def test_a_request_id_used_again_for_another_task_completes_that_task(board):
    first = board.claimed_by_alice()
    second = board.claimed_by_alice()
    complete(board.alice_client, first.id, "first", request_id="complete")

    done = complete(board.alice_client, second.id, "second", request_id="complete")

    assert (done.id, done.status, done.result) == (second.id, DONE, "second")
    assert board.get(second.id) == done


def test_a_failed_complete_does_not_use_up_its_request_id(board):
    task = board.create()
    raises(
        "TASK_NOT_IN_PROGRESS",
        board.admin.tasks.CompleteTask,
        pb.CompleteTaskRequest(task_id=task.id, result="early", request_id="complete-1"),
    )
    claim(board.alice_client, task.id)

    done = complete(board.alice_client, task.id, "in time", request_id="complete-1")

    assert (done.status, done.result) == (DONE, "in time")


# --- events --------------------------------------------------------------------------------


def test_every_change_writes_its_events_with_the_acting_agent(board):
    alice, bob = board.alice.id, board.bob.id
    task = board.create(board.alice_client, title="Tracked")
    update(board.admin, pb.Task(id=task.id, description="More detail"))
    claim(board.alice_client, task.id)
    move(board.alice_client, task.id, TODO)
    claim(board.admin, task.id, agent_id=bob)
    complete(board.bob_client, task.id, "done by Bob")
    move(board.admin, task.id, TODO)
    move(board.bob_client, task.id, IN_PROGRESS)
    move(board.bob_client, task.id, DONE)
    move(board.bob_client, task.id, TODO)
    move(board.alice_client, task.id, CANCELLED)

    assert events(task.id) == [
        ("task.created", alice),
        ("task.updated", None),
        ("task.claimed", alice),
        ("task.moved", alice),
        ("task.claimed", None),
        ("task.completed", bob),
        ("task.moved", None),
        ("task.moved", bob),
        ("task.moved", bob),
        ("task.completed", bob),
        ("task.moved", bob),
        ("task.moved", alice),
        ("task.cancelled", alice),
    ]


def test_each_event_row_holds_the_task_as_it_was_right_after_the_change(board):
    task = board.create()
    claimed = claim(board.alice_client, task.id)
    done = complete(board.alice_client, task.id, "result text")

    rows = list(TaskEvent.select().where(TaskEvent.task_id == task.id).order_by(TaskEvent.event_id))

    snapshots = [json.loads(row.payload) for row in rows]
    assert [(s["status"], s["assignedAgentId"], s["result"]) for s in snapshots] == [
        ("todo", None, None),
        ("in_progress", board.alice.id, None),
        ("done", board.alice.id, "result text"),
    ]
    assert [s["etag"] for s in snapshots] == [task.etag, claimed.etag, done.etag]
    assert [(row.status, row.assigned_agent_id) for row in rows] == [
        ("todo", None),
        ("in_progress", board.alice.id),
        ("done", board.alice.id),
    ]
    assert {row.format for row in rows} == {1}
    assert {row.team_id for row in rows} == {board.world.id}
    assert [row.agent_name for row in rows] == [None, "Alice", "Alice"]


def test_calls_that_change_nothing_write_no_events(board):
    held = board.claimed_by_alice()
    before = events(held.id)

    claim(board.alice_client, held.id)
    move(board.alice_client, held.id, IN_PROGRESS)
    board.admin.tasks.GetTask(pb.GetTaskRequest(task_id=held.id))
    list_tasks(board.admin)
    for call, request in [
        (board.bob_client.tasks.ClaimTask, pb.ClaimTaskRequest(task_id=held.id)),
        (board.bob_client.tasks.CompleteTask, pb.CompleteTaskRequest(task_id=held.id)),
        (board.alice_client.tasks.MoveTask, pb.MoveTaskRequest(task_id=held.id, status=9)),
        (
            board.admin.tasks.UpdateTask,
            pb.UpdateTaskRequest(task=pb.Task(id=held.id, assigned_agent_id=board.bob.id)),
        ),
    ]:
        with pytest.raises(grpc.RpcError):
            call(request)

    assert events(held.id) == before
    assert board.get(held.id) == held
