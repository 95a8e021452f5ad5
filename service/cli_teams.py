"""The `agenttasks team` commands: create, list, rotate-key (key recovery from the machine)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from .config import ConfigError
from .domain import team_lookup, teams
from .domain.errors import ValidationError
from .domain.values import MICROS
from .storage.models import Team


def add_commands(team_commands, db_argument) -> None:
    """Adds create, list and rotate-key to the `team` subparsers."""
    create = team_commands.add_parser("create", help="create a team and print its API key once")
    create.add_argument("--name", required=True, help="the team's name (1-200 characters)")
    create.add_argument("--json", action="store_true", help='print {"teamId", "apiKey"} only')
    db_argument(create)
    create.set_defaults(usage_of=create, run=create_team)

    listing = team_commands.add_parser("list", help="list the teams: id, name, created time")
    listing.add_argument("--json", action="store_true", help="print one JSON array line")
    db_argument(listing)
    listing.set_defaults(usage_of=listing, run=list_teams)

    rotate = team_commands.add_parser(
        "rotate-key",
        help="issue a new Team API Key (the old one stops working at once) and print it once",
    )
    which = rotate.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", help="the team's id (see `agenttasks team list`)")
    which.add_argument("--name", help="the team's name, when no other team has it")
    rotate.add_argument("--json", action="store_true", help='print {"teamId", "apiKey"} only')
    db_argument(rotate)
    rotate.set_defaults(usage_of=rotate, run=rotate_key)


def create_team(args: argparse.Namespace) -> int:
    try:
        team, key = teams.create_team(args.name)
    except ValidationError as error:
        raise ConfigError(error.message) from None
    _print_key(args, team, key, "created")
    return 0


def list_teams(args: argparse.Namespace) -> int:
    rows = [
        {"teamId": team.id, "name": team.name, "createdAt": _iso(team.created_at)}
        for team in team_lookup.list_teams()
    ]
    if args.json:
        print(json.dumps(rows))
        return 0
    width = max((len(row["name"]) for row in rows), default=4)
    print(f"{'ID':<25}  {'NAME':<{width}}  CREATED")
    for row in rows:
        print(f"{row['teamId']:<25}  {row['name']:<{width}}  {row['createdAt']}")
    return 0


def rotate_key(args: argparse.Namespace) -> int:
    team_id = args.id if args.id is not None else _id_named(args.name)
    if team_lookup.team_by_id(team_id) is None:
        raise ConfigError(f"--id: no team has the id {team_id[:100]!r}; see `agenttasks team list`")
    team, key = team_lookup.rotate_key(team_id)
    _print_key(args, team, key, "has a new key")
    if not args.json:
        print("The previous key no longer works.")
    return 0


def _id_named(name: str) -> str:
    found = team_lookup.teams_named(name)
    if not found:
        raise ConfigError(f"--name: no team is named {name[:100]!r}; see `agenttasks team list`")
    if len(found) > 1:
        ids = ", ".join(team.id for team in found)
        raise ConfigError(f"--name: {len(found)} teams are named {name[:100]!r} ({ids}); use --id")
    return found[0].id


def _print_key(args: argparse.Namespace, team: Team, key: str, what: str) -> None:
    if args.json:
        print(json.dumps({"teamId": team.id, "apiKey": key}))
        return
    print(f"Team {team.name!r} {what} (id {team.id}).")
    print(f"Team API Key, shown only this once:\n\n    {key}\n")


def _iso(micros: int) -> str:
    moment = datetime.fromtimestamp(micros / MICROS, UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
