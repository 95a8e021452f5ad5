"""Resolved tokens are remembered briefly: a revocation stops a token at once in the process
that made it, and within the documented bound in every other process on the database."""

from __future__ import annotations

import time

import grpc

from agenttasks.server.domain import tokens
from agenttasks.server.storage.models import Agent
from agenttasks.v1 import agents_pb2, teams_pb2

from .helpers import raises
from .test_cli import Served

BOUND_SECONDS = tokens.CACHE_US / 1e6 + 0.5  # the bound, plus a call's worth of slack


def who(client) -> teams_pb2.WhoAmIResponse:
    return client.teams.WhoAmI(teams_pb2.WhoAmIRequest())


def test_a_revoked_token_is_refused_on_the_next_call(world):
    agent, client = world.agent()
    who(client)  # resolved and remembered
    world.admin.agents.RevokeAgentToken(agents_pb2.RevokeAgentTokenRequest(agent_id=agent.id))
    raises("UNAUTHORIZED", who, client)


def test_a_deactivated_agent_is_refused_on_the_next_call(world):
    agent, client = world.agent()
    who(client)
    world.admin.agents.UpdateAgent(
        agents_pb2.UpdateAgentRequest(
            agent=agents_pb2.Agent(id=agent.id, status=agents_pb2.AGENT_STATUS_INACTIVE),
            update_mask={"paths": ["status"]},
        )
    )
    raises("UNAUTHORIZED", who, client)


def last_active(agent_id: str) -> int:
    return Agent.get(Agent.id == agent_id).last_active_at


def test_last_active_is_written_at_most_once_a_minute(world):
    agent, client = world.agent()
    who(client)
    half_a_minute_ago = last_active(agent.id) - 30 * 10**6
    Agent.update(last_active_at=half_a_minute_ago).where(Agent.id == agent.id).execute()
    tokens.forget_resolved()
    who(client)
    who(client)
    assert last_active(agent.id) == half_a_minute_ago
    Agent.update(last_active_at=half_a_minute_ago - 31 * 10**6).where(
        Agent.id == agent.id
    ).execute()
    tokens.forget_resolved()
    who(client)
    assert last_active(agent.id) > half_a_minute_ago


def test_another_process_refuses_a_revoked_token_within_the_bound(world, database_url, tmp_path):
    agent, client = world.agent()
    # Failed attempts from 127.0.0.1 share one bucket in the database with every earlier
    # test's servers: this one must answer UNAUTHENTICATED, not RATE_LIMITED.
    with Served(
        tmp_path, "--db", database_url, "--no-workers", "--rate-limit-auth-failures", "0"
    ) as served:
        served.wait_serving()
        elsewhere = served.client(client.token)
        who(elsewhere)  # the other process now remembers the token
        world.admin.agents.RevokeAgentToken(agents_pb2.RevokeAgentTokenRequest(agent_id=agent.id))
        revoked = time.monotonic()
        while True:
            try:
                who(elsewhere)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED
                break
            assert time.monotonic() - revoked < BOUND_SECONDS, "still accepted past the bound"
            time.sleep(0.05)
