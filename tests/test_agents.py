"""AgentService over a real channel: tokens shown once, (de)activation, rotation, revocation."""

from __future__ import annotations

import re

from google.protobuf import duration_pb2, field_mask_pb2

from agenttasks.server.domain import tokens
from agenttasks.server.storage.models import Agent as AgentRow
from agenttasks.v1 import agents_pb2 as pb
from agenttasks.v1 import projects_pb2, tasks_pb2, teams_pb2

from .helpers import raises

TOKEN = re.compile(r"at_[0-9a-f]{64}")
WHO = teams_pb2.WhoAmIRequest()


def _deactivate(world, agent_id: str) -> pb.UpdateAgentResponse:
    return world.admin.agents.UpdateAgent(
        pb.UpdateAgentRequest(
            agent=pb.Agent(id=agent_id, status=pb.AGENT_STATUS_INACTIVE),
            update_mask=field_mask_pb2.FieldMask(paths=["status"]),
        )
    )


def _activate(world, agent_id: str) -> pb.UpdateAgentResponse:
    return world.admin.agents.UpdateAgent(
        pb.UpdateAgentRequest(agent=pb.Agent(id=agent_id, status=pb.AGENT_STATUS_ACTIVE))
    )


def test_create_returns_an_active_agent_and_its_token_once(world):
    created = world.admin.agents.CreateAgent(
        pb.CreateAgentRequest(name=" Builder ", description="d")
    )
    assert TOKEN.fullmatch(created.token)
    agent = created.agent
    assert (agent.name, agent.description, agent.status, agent.task_count) == (
        "Builder",
        "d",
        pb.AGENT_STATUS_ACTIVE,
        0,
    )
    fetched = world.admin.agents.GetAgent(pb.GetAgentRequest(agent_id=agent.id))
    assert fetched == pb.GetAgentResponse(agent=agent)  # the token is nowhere to be read again


def test_create_retry_with_the_same_request_id_returns_the_agent_without_a_token(world):
    request = pb.CreateAgentRequest(name="Once", request_id="agent-once")
    first = world.admin.agents.CreateAgent(request)
    again = world.admin.agents.CreateAgent(request)
    assert again.agent.id == first.agent.id and again.token == ""
    assert len(world.admin.agents.ListAgents(pb.ListAgentsRequest()).agents) == 1
    assert world.client(first.token).teams.WhoAmI(WHO).agent_id == first.agent.id


def test_create_validates_name_and_description(world):
    body = raises(
        "VALIDATION_ERROR",
        world.admin.agents.CreateAgent,
        pb.CreateAgentRequest(name="", description="x" * 10_001),
    )
    assert body.violations == ["name", "description"]


def test_list_filters_by_status_and_pages(world):
    a, _ = world.agent("a")
    b, _ = world.agent("b")
    c, _ = world.agent("c")
    _deactivate(world, b.id)
    everyone = world.admin.agents.ListAgents(pb.ListAgentsRequest(page_size=2))
    assert [x.id for x in everyone.agents] == [a.id, b.id] and everyone.next_page_token
    rest = world.admin.agents.ListAgents(
        pb.ListAgentsRequest(page_size=2, page_token=everyone.next_page_token)
    )
    assert [x.id for x in rest.agents] == [c.id] and rest.next_page_token == ""
    inactive = world.admin.agents.ListAgents(pb.ListAgentsRequest(status=pb.AGENT_STATUS_INACTIVE))
    assert [x.id for x in inactive.agents] == [b.id]
    raises(
        "VALIDATION_ERROR",
        world.admin.agents.ListAgents,
        pb.ListAgentsRequest(page_size=2, page_token=everyone.next_page_token, status=1),
        message="page_token: was issued for a request with other filters",
    )
    raises("VALIDATION_ERROR", world.admin.agents.ListAgents, pb.ListAgentsRequest(status=9))


def test_agents_of_another_team_are_not_found(world, other_world):
    theirs, _ = other_world.agent("theirs")
    for call, request in (
        (world.admin.agents.GetAgent, pb.GetAgentRequest(agent_id=theirs.id)),
        (world.admin.agents.RotateAgentToken, pb.RotateAgentTokenRequest(agent_id=theirs.id)),
        (world.admin.agents.RevokeAgentToken, pb.RevokeAgentTokenRequest(agent_id=theirs.id)),
        (
            world.admin.agents.UpdateAgent,
            pb.UpdateAgentRequest(agent=pb.Agent(id=theirs.id, name="x")),
        ),
    ):
        raises("NOT_FOUND", call, request, message=f"agent {theirs.id!r} not found")


def test_update_writes_name_and_description(world):
    agent, _ = world.agent("old")
    updated = world.admin.agents.UpdateAgent(
        pb.UpdateAgentRequest(agent=pb.Agent(id=agent.id, name="new", description="desc"))
    )
    assert (updated.agent.name, updated.agent.description, updated.token) == ("new", "desc", "")


def test_deactivation_stops_the_token_at_once_and_releases_its_tasks(world):
    agent, client = world.agent("quitter")
    project = world.project()
    task = world.admin.tasks.CreateTask(
        tasks_pb2.CreateTaskRequest(project_id=project.id, title="t")
    ).task
    client.tasks.ClaimTask(tasks_pb2.ClaimTaskRequest(task_id=task.id))
    assert world.admin.agents.GetAgent(pb.GetAgentRequest(agent_id=agent.id)).agent.task_count == 1

    response = _deactivate(world, agent.id)

    assert response.agent.status == pb.AGENT_STATUS_INACTIVE and response.token == ""
    assert response.agent.task_count == 0
    raises("UNAUTHORIZED", client.teams.WhoAmI, WHO)
    released = world.admin.tasks.GetTask(tasks_pb2.GetTaskRequest(task_id=task.id)).task
    assert (released.status, released.assigned_agent_id) == (tasks_pb2.TASK_STATUS_TODO, "")


def test_reactivation_issues_a_new_token_and_the_old_one_stays_dead(world):
    agent, old = world.agent("phoenix")
    _deactivate(world, agent.id)
    response = _activate(world, agent.id)
    assert response.agent.status == pb.AGENT_STATUS_ACTIVE and TOKEN.fullmatch(response.token)
    assert world.client(response.token).teams.WhoAmI(WHO).agent_id == agent.id
    raises("UNAUTHORIZED", old.teams.WhoAmI, WHO)
    # Activating an active agent issues nothing.
    assert _activate(world, agent.id).token == ""


def test_rotation_replaces_the_token(world):
    agent, old = world.agent("rotor")
    rotated = world.admin.agents.RotateAgentToken(pb.RotateAgentTokenRequest(agent_id=agent.id))
    assert TOKEN.fullmatch(rotated.token) and rotated.agent.id == agent.id
    raises("UNAUTHORIZED", old.teams.WhoAmI, WHO)
    assert world.client(rotated.token).teams.WhoAmI(WHO).agent_id == agent.id


def test_rotation_with_grace_keeps_the_old_token_meanwhile(world):
    agent, old = world.agent("gentle")
    rotated = world.admin.agents.RotateAgentToken(
        pb.RotateAgentTokenRequest(
            agent_id=agent.id, grace_period=duration_pb2.Duration(seconds=600)
        )
    )
    assert old.teams.WhoAmI(WHO).agent_id == agent.id
    assert world.client(rotated.token).teams.WhoAmI(WHO).agent_id == agent.id
    raises(
        "VALIDATION_ERROR",
        world.admin.agents.RotateAgentToken,
        pb.RotateAgentTokenRequest(
            agent_id=agent.id, grace_period=duration_pb2.Duration(seconds=-1)
        ),
    )


def test_revocation_stops_every_token_until_a_rotation(world):
    agent, old = world.agent("revoked")
    graced = world.admin.agents.RotateAgentToken(
        pb.RotateAgentTokenRequest(
            agent_id=agent.id, grace_period=duration_pb2.Duration(seconds=600)
        )
    )
    revoked = world.admin.agents.RevokeAgentToken(pb.RevokeAgentTokenRequest(agent_id=agent.id))
    assert revoked.agent.status == pb.AGENT_STATUS_ACTIVE
    raises("UNAUTHORIZED", old.teams.WhoAmI, WHO)
    raises("UNAUTHORIZED", world.client(graced.token).teams.WhoAmI, WHO)
    fresh = world.admin.agents.RotateAgentToken(pb.RotateAgentTokenRequest(agent_id=agent.id))
    assert world.client(fresh.token).teams.WhoAmI(WHO).agent_id == agent.id


def test_last_active_at_is_written_at_most_once_a_minute(world):
    agent, client = world.agent("busy")
    assert not world.admin.agents.GetAgent(pb.GetAgentRequest(agent_id=agent.id)).agent.HasField(
        "last_active_at"
    )
    client.teams.WhoAmI(WHO)
    first = world.admin.agents.GetAgent(pb.GetAgentRequest(agent_id=agent.id)).agent.last_active_at
    assert first.seconds > 0
    client.teams.WhoAmI(WHO)
    again = world.admin.agents.GetAgent(pb.GetAgentRequest(agent_id=agent.id)).agent.last_active_at
    assert again == first
    # Once the stored time is more than a minute old, the next call moves it.
    AgentRow.update(last_active_at=first.ToMicroseconds() - 61_000_000).where(
        AgentRow.id == agent.id
    ).execute()
    tokens.forget_resolved()  # the server remembers a resolved token for up to a second
    client.teams.WhoAmI(WHO)
    moved = world.admin.agents.GetAgent(pb.GetAgentRequest(agent_id=agent.id)).agent.last_active_at
    assert moved.ToMicroseconds() >= first.ToMicroseconds()


def test_a_missing_id_is_a_validation_error_naming_the_field(world):
    for call, request, field in (
        (world.admin.agents.GetAgent, pb.GetAgentRequest(), "agent_id"),
        (
            world.admin.agents.UpdateAgent,
            pb.UpdateAgentRequest(agent=pb.Agent(name="x")),
            "agent.id",
        ),
        (world.admin.agents.RotateAgentToken, pb.RotateAgentTokenRequest(), "agent_id"),
        (world.admin.agents.RevokeAgentToken, pb.RevokeAgentTokenRequest(), "agent_id"),
        (world.admin.projects.GetProject, projects_pb2.GetProjectRequest(), "project_id"),
        (world.admin.projects.DeleteProject, projects_pb2.DeleteProjectRequest(), "project_id"),
        (
            world.admin.projects.UpdateProject,
            projects_pb2.UpdateProjectRequest(project=projects_pb2.Project(name="x")),
            "project.id",
        ),
    ):
        body = raises("VALIDATION_ERROR", call, request, message=f"{field}: is required")
        assert body.violations == [field]
