"""Every call's gate: one interceptor authenticates, rate-limits and authorises it against
one permission table, runs the handler with the resolved caller, and turns domain errors
into gRPC statuses (the only place that does).

The token is resolved inside the wrapped handler, on the worker pool: a sync grpcio
server runs `intercept_service` on its single polling thread, where a database lookup
would stall every call.
"""

from __future__ import annotations

import contextvars
import enum
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from .api.errors import to_status
from .domain import tokens
from .domain.errors import AgentTasksError, Forbidden, InternalError, Unauthorized
from .domain.values import Caller, TokenKind, own_team
from .ratelimit import RateLimiter

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class RateLimits:
    """Server-wide defaults, per minute; 0 disables. A team's settings override the first two."""

    task: int = 120
    other: int = 60
    auth_failures: int = 5


_current_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("caller")


def current_caller() -> Caller:
    """The caller of the RPC being handled on this thread."""
    return _current_caller.get()


def bearer_token(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def client_address(context: grpc.ServicerContext) -> str:
    """`ipv4:127.0.0.1:5000` -> `127.0.0.1`; `ipv6:[::1]:5000` -> `[::1]`."""
    peer = context.peer() or ""
    address = peer.partition(":")[2]
    return address.rsplit(":", 1)[0] if address.count(":") >= 1 else address


class AuthInterceptor(grpc.ServerInterceptor):
    def __init__(self, limits: RateLimits, limiter: RateLimiter | None = None) -> None:
        self._limits = limits
        self._limiter = limiter or RateLimiter()

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.split("/")[1] in PUBLIC_SERVICES:
            return handler
        rule = PERMISSIONS.get(method, UNLISTED)
        metadata = handler_call_details.invocation_metadata

        def admit(request, context: grpc.ServicerContext) -> Caller:
            caller = self._admit(method, rule, metadata, context)
            if "team_id" in request.DESCRIPTOR.fields_by_name:
                own_team(caller, request.team_id)  # before any validation, as documented
            return caller

        return _guarded(handler, method, admit)

    def _admit(self, method: str, rule: Rule, metadata: Any, context) -> Caller:
        token = bearer_token(metadata)
        identity = tokens.authenticate(token) if token else None
        if identity is None:
            self._limiter.charge(
                ("auth-failure", client_address(context)),
                self._limits.auth_failures,
                "failed authentications",
            )
            raise Unauthorized()
        if method.startswith(_T):
            limit, what = _pick(identity.task_limit, self._limits.task), "task calls"
        else:
            limit, what = _pick(identity.other_limit, self._limits.other), "calls"
        self._limiter.charge((identity.digest, what), limit, what)
        if not rule.allows(identity.caller.kind):
            raise Forbidden(rule.denial)
        return identity.caller


def _pick(team_setting: int | None, default: int) -> int:
    return default if team_setting is None else team_setting


def _report(error: Exception, method: str, context: grpc.ServicerContext) -> None:
    """Aborts the call with the documented status for `error` (never returns)."""
    if isinstance(error, NotImplementedError):  # an RPC of the proto not served yet
        context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented yet")
    if not isinstance(error, AgentTasksError):
        request_id = uuid.uuid4().hex[:16]
        log.error("internal error in %s (request id %s)", method, request_id, exc_info=error)
        error = InternalError(f"Internal error (request id {request_id})")
    context.abort_with_status(to_status(error))


def _guarded(handler, method: str, admit: Callable[[Any, grpc.ServicerContext], Caller]):
    """The handler, run only for an admitted caller, with errors reported as statuses."""
    if handler.unary_unary is not None:
        inner = handler.unary_unary

        def unary_unary(request, context):
            try:
                reset = _current_caller.set(admit(request, context))
                try:
                    return inner(request, context)
                finally:
                    _current_caller.reset(reset)
            except Exception as error:
                _report(error, method, context)

        return handler._replace(unary_unary=unary_unary)

    if handler.unary_stream is not None:
        inner_stream = handler.unary_stream

        def unary_stream(request, context) -> Iterator:
            try:
                reset = _current_caller.set(admit(request, context))
                try:
                    yield from inner_stream(request, context)
                finally:
                    _current_caller.reset(reset)
            except Exception as error:
                _report(error, method, context)

        return handler._replace(unary_stream=unary_stream)

    # No client-streaming RPCs exist; refuse rather than run one unauthenticated.
    raise ValueError(f"unsupported handler type for {method}")
