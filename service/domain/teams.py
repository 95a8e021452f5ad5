"""Teams: creation (command line), settings, Team API Key rotation, and WhoAmI."""

from __future__ import annotations

from typing import Any

from ..storage.db import write_transaction
from ..storage.models import Team
from . import tokens
from .errors import NotFound
from .validation import MAX_GRACE_US, Checks, unknown_fields
from .values import MICROS, Caller, TokenKind, new_id, now_us, own_team

RATE_LIMIT_MAX = 100_000
MAX_LEASE_US = 24 * 3600 * MICROS
WRITABLE = {"name", "rate_limit_task_per_minute", "rate_limit_other_per_minute", "default_lease_us"}


def create_team(name: str) -> tuple[Team, str]:
    """Creates a team and its first Team API Key (returned once)."""
    checks = Checks()
    name = checks.name("name", name)
    checks.done()
    now = now_us()
    with write_transaction():
        team = Team.create(id=new_id(), name=name, created_at=now, updated_at=now)
        key = tokens.issue(team.id, TokenKind.TEAM_API_KEY)
    return team, key


def create_default_team_if_empty() -> tuple[Team, str] | None:
    """On a database without teams, creates team `default`; else does nothing."""
    with write_transaction():
        if Team.select().exists():
            return None
        return create_team("default")


def _load(team_id: str) -> Team:
    team = Team.get_or_none(Team.id == team_id)
    if team is None:
        raise NotFound.of("team", team_id)
    return team


def get_team(caller: Caller, team_id: str) -> Team:
    return _load(own_team(caller, team_id))


def update_team(caller: Caller, team_id: str, changes: dict[str, Any]) -> Team:
    """Writes `changes` (name, rate limits, default lease in µs; None resets a setting)."""
    team_id = own_team(caller, team_id)
    unknown_fields(changes, WRITABLE)
    checks = Checks()
    if "name" in changes:
        changes["name"] = checks.name("team.name", changes["name"])
    for field in ("rate_limit_task_per_minute", "rate_limit_other_per_minute"):
        if changes.get(field) is not None:
            checks.whole(f"team.settings.{field}", changes[field], 0, RATE_LIMIT_MAX)
    lease = changes.get("default_lease_us")
    checks.duration("team.settings.default_lease_duration", lease, MAX_LEASE_US)
    checks.done()
    if lease == 0:
        changes["default_lease_us"] = None
    with write_transaction():
        team = _load(team_id)
        for field, value in changes.items():
            setattr(team, field, value)
        team.updated_at = now_us()
        team.save()
        tokens.forget_resolved()  # its rate limits ride along with each resolved token
    return team


def rotate_team_api_key(caller: Caller, team_id: str, grace_us: int) -> tuple[Team, str]:
    team_id = own_team(caller, team_id)
    checks = Checks()
    checks.duration("grace_period", grace_us, MAX_GRACE_US)
    checks.done()
    with write_transaction():
        team = _load(team_id)
        tokens.retire(tokens.team_keys(team_id), grace_us)
        key = tokens.issue(team_id, TokenKind.TEAM_API_KEY)
    return team, key
