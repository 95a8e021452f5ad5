"""AgentService: requests to domain calls to responses."""

from __future__ import annotations

from agenttasks.v1 import agents_pb2 as pb
from agenttasks.v1 import agents_pb2_grpc

from ..domain import agents
from . import convert
from .door import current_caller

WRITABLE = {
    "name": lambda m: {"name": m.name},
    "description": lambda m: {"description": m.description},
    "status": lambda m: {"status": convert.agent_status(m.status, "agent.status") or ""},
}


class AgentServicer(agents_pb2_grpc.AgentServiceServicer):
    def ListAgents(self, request, context):
        rows, next_page = agents.list_agents(
            current_caller(),
            request.team_id,
            convert.agent_status(request.status),
            request.page_size,
            request.page_token,
        )
        return pb.ListAgentsResponse(
            agents=[convert.agent(row) for row in rows], next_page_token=next_page
        )

    def GetAgent(self, request, context):
        agent = agents.get_agent(current_caller(), request.agent_id)
        return pb.GetAgentResponse(agent=convert.agent(agent))

    def CreateAgent(self, request, context):
        agent, token = agents.create_agent(
            current_caller(),
            request.team_id,
            request.name,
            request.description,
            request.request_id,
        )
        return pb.CreateAgentResponse(agent=convert.agent(agent), token=token)

    def UpdateAgent(self, request, context):
        changes = convert.changes_from(request.agent, request.update_mask, WRITABLE)
        agent, token = agents.update_agent(current_caller(), request.agent.id, changes)
        return pb.UpdateAgentResponse(agent=convert.agent(agent), token=token)

    def RotateAgentToken(self, request, context):
        grace = convert.micros_of(request, "grace_period") or 0
        agent, token = agents.rotate_agent_token(current_caller(), request.agent_id, grace)
        return pb.RotateAgentTokenResponse(agent=convert.agent(agent), token=token)

    def RevokeAgentToken(self, request, context):
        agent = agents.revoke_agent_token(current_caller(), request.agent_id)
        return pb.RevokeAgentTokenResponse(agent=convert.agent(agent))
