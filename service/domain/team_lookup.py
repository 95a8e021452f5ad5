"""Teams as the machine's operator sees them: listed and found without a token."""

from __future__ import annotations

from ..storage.models import Team
from . import teams
from .values import Caller, TokenKind


def list_teams() -> list[Team]:
    """Every team, oldest first."""
    return list(Team.select().order_by(Team.seq))


def teams_named(name: str) -> list[Team]:
    """The teams whose name is exactly `name` (names are not unique), oldest first."""
    return list(Team.select().where(Team.name == name).order_by(Team.seq))


def team_by_id(team_id: str) -> Team | None:
    return Team.get_or_none(Team.id == team_id)


def rotate_key(team_id: str) -> tuple[Team, str]:
    """A new Team API Key for `team_id`; the old one stops working at once.

    Whoever can run the command on the database's machine may do what the team key may,
    so the rotation runs as that team's key would.
    """
    caller = Caller(team_id=team_id, kind=TokenKind.TEAM_API_KEY)
    return teams.rotate_team_api_key(caller, team_id, 0)
