"""Every method of the five services, called with every kind of credential.

Generated from the service descriptors and the permission table, so a new RPC without
a decision about who may call it fails here.
"""

from __future__ import annotations

import secrets

import grpc
import pytest
from google.protobuf import message_factory

from agenttasks.server.permissions import PERMISSIONS, Access
from agenttasks.server.server import SERVICES
from agenttasks.v1 import (
    agents_pb2,
    tasks_pb2,
    teams_pb2,
)

from .conftest import new_team
from .helpers import EXPECTED, error_body

METHODS = {
    f"/{service.full_name}/{method.name}": method
    for service in SERVICES
    for method in service.methods
}
NOT_YET_IMPLEMENTED: set[str] = set()  # every RPC of the protos is served
INVALID = "Invalid or missing token"
TEAM_MISMATCH = "team_id does not match the caller's team"
RESOURCE_MESSAGES = {"Task", "Project", "Agent", "Team"}


def test_the_permission_table_decides_every_method_and_nothing_else():
    assert set(PERMISSIONS) == set(METHODS)


def test_agent_tokens_are_refused_exactly_what_the_spec_reserves_for_team_keys():
    team_only = {
        path.rsplit("/", 1)[1]
        for path, rule in PERMISSIONS.items()
        if rule.access is Access.TEAM_KEY
    }
    webhooks = {m.name for m in SERVICES[3].methods}
    assert team_only == {
        "CreateProject", "UpdateProject", "DeleteProject",
        "CreateAgent", "UpdateAgent", "RotateAgentToken", "RevokeAgentToken",
        "GetTeam", "UpdateTeam", "RotateTeamApiKey",
    } | webhooks  # fmt: skip


def _request(method, ids: dict[str, str] | None = None):
    request = message_factory.GetMessageClass(method.input_type)()
    for field in request.DESCRIPTOR.fields:
        if ids and field.name in ids:
            setattr(request, field.name, ids[field.name])
        elif ids and field.enum_type is not None:
            setattr(request, field.name, 1)  # a valid value, so validation passes
        elif (
            ids and field.message_type is not None and field.message_type.name in RESOURCE_MESSAGES
        ):
            resource = field.message_type.name.lower()
            getattr(request, field.name).id = ids.get(f"{resource}_id", "")
    return request


def call(channel, path: str, request, authorization: str | None) -> grpc.RpcError | None:
    """Calls one method; returns the error, or None when it succeeded (or kept streaming)."""
    method = METHODS[path]
    response = message_factory.GetMessageClass(method.output_type)
    metadata = [("authorization", authorization)] if authorization is not None else []
    if method.server_streaming:
        stub = channel.unary_stream(path, type(request).SerializeToString, response.FromString)
    else:
        stub = channel.unary_unary(path, type(request).SerializeToString, response.FromString)
    try:
        result = stub(request, metadata=metadata, timeout=2)
        if method.server_streaming:
            for _ in result:
                pass
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and method.server_streaming:
            return None  # an admitted stream stays open waiting for events
        return error
    return None


def assert_refused(error: grpc.RpcError | None, code: str, message: str) -> None:
    assert error is not None, f"expected {code}, but the call was admitted"
    body = error_body(error)
    grpc_code, status_code = EXPECTED[code]
    assert (body.grpc_code, body.code, body.status_code, body.info.reason, body.message) == (
        grpc_code,
        code,
        status_code,
        code,
        message,
    )


def assert_admitted(error: grpc.RpcError | None, path: str) -> None:
    """The gate let the call through: whatever the handler answered, it was not an auth refusal."""
    if error is None:
        return
    if path in NOT_YET_IMPLEMENTED and error.code() == grpc.StatusCode.UNIMPLEMENTED:
        return
    body = error_body(error)
    assert body.code not in ("UNAUTHORIZED", "FORBIDDEN", "INTERNAL"), (path, body)


@pytest.fixture
def credentials(channel):
    """One team with every kind of credential, dead and alive, plus another team."""
    team = new_team(channel, "Permissions")
    project = team.project()
    agent, _ = team.agent("worker")
    _, revoked = team.agent("revoked")
    team.admin.agents.RevokeAgentToken(
        agents_pb2.RevokeAgentTokenRequest(agent_id=revoked_agent_id(team, revoked))
    )
    inactive_agent, inactive = team.agent("inactive")
    team.admin.agents.UpdateAgent(
        agents_pb2.UpdateAgentRequest(
            agent=agents_pb2.Agent(id=inactive_agent.id, status=agents_pb2.AGENT_STATUS_INACTIVE),
        )
    )
    caller_agent, agent_client = team.agent("caller")
    task = team.admin.tasks.CreateTask(
        tasks_pb2.CreateTaskRequest(project_id=project.id, title="A task")
    ).task
    old_key = team.key
    rotated = team.admin.teams.RotateTeamApiKey(teams_pb2.RotateTeamApiKeyRequest())
    other = new_team(channel, "Intruders")
    _, other_agent = other.agent("intruder")
    return {
        "team_key": rotated.api_key,
        "agent_token": agent_client.token,
        "dead": {
            "no token": None,
            "empty bearer": "Bearer ",
            "wrong scheme": f"Basic {rotated.api_key}",
            "malformed prefix": "Bearer xx_" + secrets.token_hex(32),
            "malformed length": "Bearer tk_" + secrets.token_hex(31),
            "malformed hex": "Bearer at_" + "g" * 64,
            "unknown token": "Bearer tk_" + secrets.token_hex(32),
            "rotated-away team key": f"Bearer {old_key}",
            "revoked agent token": f"Bearer {revoked.token}",
            "inactive agent's token": f"Bearer {inactive.token}",
        },
        "other_key": other.key,
        "other_agent_token": other_agent.token,
        "ids": {
            "team_id": team.id,
            "task_id": task.id,
            "project_id": project.id,
            "agent_id": agent.id,
        },
        # An agent naming another agent is refused by the rules of ClaimTask, not the gate.
        "agent_ids": {
            "team_id": team.id,
            "task_id": task.id,
            "project_id": project.id,
            "agent_id": caller_agent.id,
        },
    }


def revoked_agent_id(team, client) -> str:
    return client.teams.WhoAmI(teams_pb2.WhoAmIRequest()).agent_id


@pytest.fixture(params=sorted(METHODS), ids=lambda path: path.rsplit(".", 1)[1])
def path(request) -> str:
    return request.param


def test_dead_credentials_are_unauthenticated(channel, credentials, path):
    request = _request(METHODS[path])
    for case, authorization in credentials["dead"].items():
        error = call(channel, path, request, authorization)
        assert error is not None, case
        assert_refused(error, "UNAUTHORIZED", INVALID)


def test_bearer_scheme_is_case_insensitive(channel, credentials, path):
    request = _request(METHODS[path], credentials["ids"])
    error = call(channel, path, request, f"bEaReR {credentials['team_key']}")
    assert_admitted(error, path)


def test_team_key_is_admitted_everywhere(channel, credentials, path):
    error = call(
        channel,
        path,
        _request(METHODS[path], credentials["ids"]),
        f"Bearer {credentials['team_key']}",
    )
    assert_admitted(error, path)


def test_agent_token_is_admitted_or_refused_by_the_table(channel, credentials, path):
    request = _request(METHODS[path], credentials["agent_ids"])
    error = call(channel, path, request, f"Bearer {credentials['agent_token']}")
    rule = PERMISSIONS[path]
    if rule.access is Access.TEAM_KEY:
        assert_refused(error, "FORBIDDEN", rule.denial)
        assert rule.denial.startswith("Agent tokens cannot ")
    else:
        assert_admitted(error, path)


def test_another_teams_token_never_reaches_this_team(channel, credentials, path):
    """Naming this team is FORBIDDEN; naming one of its resources is NOT_FOUND."""
    fields = METHODS[path].input_type.fields_by_name
    names_team = "team_id" in fields or "team" in fields
    names_resource = any(
        name in fields for name in ("task_id", "project_id", "agent_id", "task", "project", "agent")
    )
    rule = PERMISSIONS[path]
    request = _request(METHODS[path], credentials["ids"])
    for token in (credentials["other_key"], credentials["other_agent_token"]):
        error = call(channel, path, request, f"Bearer {token}")
        by_agent = token == credentials["other_agent_token"]
        if by_agent and rule.access is Access.TEAM_KEY:
            assert_refused(error, "FORBIDDEN", rule.denial)
        elif names_team:
            assert_refused(error, "FORBIDDEN", TEAM_MISMATCH)
        elif by_agent and path.endswith("/ClaimTask"):
            # The agent_id it names is not itself: refused before the task is looked up.
            assert_refused(error, "FORBIDDEN", "Agent tokens cannot claim tasks for another agent")
        elif names_resource and path not in NOT_YET_IMPLEMENTED:
            assert error is not None, path
            assert error_body(error).code == "NOT_FOUND", (path, error_body(error))
        else:
            assert_admitted(error, path)


def test_health_and_reflection_need_no_token_and_ignore_a_bad_one(channel):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel)
    for metadata in ([], [("authorization", "Bearer tk_nonsense")]):
        reply = health.Check(health_pb2.HealthCheckRequest(service=""), metadata=metadata)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=metadata
        )
        names = {s.name for s in next(answers).list_services_response.service}
        assert "agenttasks.v1.TaskService" in names
