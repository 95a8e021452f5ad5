"""Every call's gate, whatever door it came through: token -> caller, rate limit, permission.

A plain function of (method, authorization value, client address), so the gRPC door
(api/door.py) and any later one (HTTP/JSON, MCP tools) admit callers the same way.
"""

from __future__ import annotations

from .domain import tokens
from .domain.errors import Forbidden, Unauthorized, ValidationError
from .domain.values import Caller
from .permissions import is_task_call, rule_for
from .ratelimit import RateLimiter, RateLimits

# Longer `authorization` values are refused unread (tokens are 67 characters).
AUTHORIZATION_MAX = 1024


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `authorization: Bearer <token>` value (scheme case-insensitive)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


class Gate:
    def __init__(self, limits: RateLimits, limiter: RateLimiter | None = None) -> None:
        self._limits = limits
        self._limiter = limiter or RateLimiter()

    def admit(self, method: str, authorization: str | None, address: str) -> Caller:
        """The caller of `method`, or the documented error: authenticate, limit, authorise."""
        too_long = authorization is not None and len(authorization) > AUTHORIZATION_MAX
        token = None if too_long else bearer_token(authorization)
        identity = tokens.authenticate(token) if token else None
        if identity is None:
            self._failed_attempt(address)
            raise Unauthorized()
        if is_task_call(method):
            limit, what = _pick(identity.task_limit, self._limits.task), "task calls"
        else:
            limit, what = _pick(identity.other_limit, self._limits.other), "calls"
        self._limiter.charge((identity.digest, what), limit, what)
        rule = rule_for(method)
        if not rule.allows(identity.caller.kind):
            raise Forbidden(rule.denial)
        return identity.caller

    def refuse_undecodable(self, address: str) -> None:
        """Answers a request whose bytes did not decode; it counts as a failed attempt."""
        self._failed_attempt(address)
        raise ValidationError.field("request", "the request bytes do not decode as its message")

    def _failed_attempt(self, address: str) -> None:
        self._limiter.charge(
            ("auth-failure", address), self._limits.auth_failures, "failed attempts"
        )


def _pick(team_setting: int | None, default: int) -> int:
    return default if team_setting is None else team_setting
