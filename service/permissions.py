"""Who may call what: one table, method -> rule. A method missing from it is refused.

Health checking and reflection are public and ignore any token sent with them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .domain.values import TokenKind


class Access(enum.Enum):
    ANY_TOKEN = "any valid token"
    TEAM_KEY = "Team API Key only"
    NOBODY = "no token"


@dataclass(frozen=True)
class Rule:
    access: Access
    denial: str = ""

    def allows(self, kind: TokenKind) -> bool:
        return self.access is Access.ANY_TOKEN or (
            self.access is Access.TEAM_KEY and kind is TokenKind.TEAM_API_KEY
        )


ANY = Rule(Access.ANY_TOKEN)


def team_key(action: str) -> Rule:
    return Rule(Access.TEAM_KEY, f"Agent tokens cannot {action}")


# Health checking and reflection are open to everyone and ignore any token sent.
PUBLIC_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)

_T, _P, _A, _W, _M = (
    "/agenttasks.v1.TaskService/",
    "/agenttasks.v1.ProjectService/",
    "/agenttasks.v1.AgentService/",
    "/agenttasks.v1.WebhookService/",
    "/agenttasks.v1.TeamService/",
)

# Who may call what. A method missing here is refused to every token (fail closed).
PERMISSIONS: dict[str, Rule] = {
    _T + "ListTasks": ANY,
    _T + "GetTask": ANY,
    _T + "CreateTask": ANY,
    _T + "UpdateTask": ANY,
    _T + "ClaimTask": ANY,
    _T + "CompleteTask": ANY,
    _T + "MoveTask": ANY,
    _T + "ClaimNextTask": ANY,
    _T + "HeartbeatTask": ANY,
    _T + "WatchTasks": ANY,
    _T + "ListTaskEvents": ANY,
    _P + "ListProjects": ANY,
    _P + "GetProject": ANY,
    _P + "CreateProject": team_key("create projects"),
    _P + "UpdateProject": team_key("update projects"),
    _P + "DeleteProject": team_key("delete projects"),
    _A + "ListAgents": ANY,
    _A + "GetAgent": ANY,
    _A + "CreateAgent": team_key("create agents"),
    _A + "UpdateAgent": team_key("update agents"),
    _A + "RotateAgentToken": team_key("rotate agent tokens"),
    _A + "RevokeAgentToken": team_key("revoke agent tokens"),
    _M + "GetTeam": team_key("view team settings"),
    _M + "UpdateTeam": team_key("change team settings"),
    _M + "RotateTeamApiKey": team_key("rotate the Team API Key"),
    _M + "WhoAmI": ANY,
    **{
        _W + name: team_key("manage webhooks")
        for name in (
            "CreateWebhook",
            "ListWebhooks",
            "GetWebhook",
            "UpdateWebhook",
            "DeleteWebhook",
            "RotateWebhookSecret",
            "ListWebhookDeliveries",
            "RedeliverWebhookDelivery",
            "TestWebhook",
        )
    },
}
UNLISTED = Rule(Access.NOBODY, "This method is not open to any token")


def is_public(method: str) -> bool:
    """`/grpc.health.v1.Health/Check` and the reflection service need no token."""
    return method.split("/")[1] in PUBLIC_SERVICES


def rule_for(method: str) -> Rule:
    return PERMISSIONS.get(method, UNLISTED)


def is_task_call(method: str) -> bool:
    """TaskService calls have their own rate limit."""
    return method.startswith(_T)
