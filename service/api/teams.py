"""TeamService: requests to domain calls to responses."""

from __future__ import annotations

from agenttasks.v1 import teams_pb2 as pb
from agenttasks.v1 import teams_pb2_grpc

from ..domain import teams
from . import convert
from .door import current_caller

_SETTINGS = {
    "settings.rate_limit_task_per_minute": lambda m: {
        "rate_limit_task_per_minute": m.settings.rate_limit_task_per_minute
        if m.settings.HasField("rate_limit_task_per_minute")
        else None
    },
    "settings.rate_limit_other_per_minute": lambda m: {
        "rate_limit_other_per_minute": m.settings.rate_limit_other_per_minute
        if m.settings.HasField("rate_limit_other_per_minute")
        else None
    },
    "settings.default_lease_duration": lambda m: {
        "default_lease_us": convert.micros_of(m.settings, "default_lease_duration")
    },
}
WRITABLE = {
    "name": lambda m: {"name": m.name},
    "settings": lambda m: {k: v for read in _SETTINGS.values() for k, v in read(m).items()},
    **_SETTINGS,
}


class TeamServicer(teams_pb2_grpc.TeamServiceServicer):
    def GetTeam(self, request, context):
        team = teams.get_team(current_caller(), request.team_id)
        return pb.GetTeamResponse(team=convert.team(team))

    def UpdateTeam(self, request, context):
        changes = convert.changes_from(request.team, request.update_mask, WRITABLE)
        team = teams.update_team(current_caller(), request.team.id, changes)
        return pb.UpdateTeamResponse(team=convert.team(team))

    def RotateTeamApiKey(self, request, context):
        grace = convert.micros_of(request, "grace_period") or 0
        team, key = teams.rotate_team_api_key(current_caller(), request.team_id, grace)
        return pb.RotateTeamApiKeyResponse(team=convert.team(team), api_key=key)

    def WhoAmI(self, request, context):
        caller = current_caller()
        return pb.WhoAmIResponse(
            team_id=caller.team_id,
            token_kind=convert.TOKEN_KINDS[caller.kind],
            agent_id=caller.agent_id or "",
        )
