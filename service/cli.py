"""The `agenttasks` command: serve, team create, migrate."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import threading

from .auth import RateLimits
from .config import ServerConfig
from .domain import teams
from .domain.errors import ValidationError
from .storage import db, migrations

log = logging.getLogger("agenttasks")


def _db_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=os.environ.get("AGENTTASKS_DB_URL", db.DEFAULT_URL),
        help="database URL: sqlite:///file.db, sqlite:////abs/file.db or "
        "postgresql://user@host:5432/db (env AGENTTASKS_DB_URL; default %(default)s)",
    )


def _parser() -> argparse.ArgumentParser:
    defaults = ServerConfig.from_env()
    parser = argparse.ArgumentParser(prog="agenttasks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC server")
    _db_argument(serve)
    serve.add_argument("--host", default=defaults.host, help="listen address (default %(default)s)")
    serve.add_argument("--port", type=int, default=defaults.port, help="default %(default)s")
    serve.add_argument(
        "--max-workers",
        type=int,
        default=defaults.max_workers,
        help="threads serving calls concurrently (default %(default)s)",
    )
    serve.add_argument(
        "--no-reflection",
        action="store_true",
        default=not defaults.reflection,
        help="turn server reflection off",
    )
    serve.add_argument(
        "--allow-private-webhooks",
        action="store_true",
        default=defaults.allow_private_webhooks,
        help="let webhooks target private and loopback addresses (development)",
    )
    serve.add_argument(
        "--rate-limit-task",
        type=int,
        default=defaults.rate_limits.task,
        help="TaskService calls per token per minute, 0 disables (%(default)s)",
    )
    serve.add_argument(
        "--rate-limit-other",
        type=int,
        default=defaults.rate_limits.other,
        help="other calls per token per minute, 0 disables (%(default)s)",
    )
    serve.add_argument(
        "--rate-limit-auth-failures",
        type=int,
        default=defaults.rate_limits.auth_failures,
        help="failed authentications per client address per minute (%(default)s)",
    )
    serve.add_argument(
        "--shutdown-grace",
        type=float,
        default=defaults.shutdown_grace,
        help="seconds in-flight calls get on SIGTERM/SIGINT (%(default)s)",
    )
    serve.add_argument("--log-level", default=os.environ.get("AGENTTASKS_LOG_LEVEL", "INFO"))

    team = commands.add_parser("team", help="manage teams")
    team_commands = team.add_subparsers(dest="team_command", required=True)
    create = team_commands.add_parser("create", help="create a team and print its API key once")
    create.add_argument("--name", required=True)
    create.add_argument("--json", action="store_true", help='print {"teamId", "apiKey"} only')
    _db_argument(create)

    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    _db_argument(migrate)
    return parser


def _open(url: str) -> None:
    db.open_database(url)
    migrations.migrate()


def serve(args: argparse.Namespace) -> int:
    from .server import create_server  # grpc is only needed for this command

    level = logging.getLevelName(args.log_level.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Peewee logs every statement with its parameters at DEBUG; those may hold secrets
    # (webhook signing keys), so its statements stay out of the log at any level.
    logging.getLogger("peewee").setLevel(logging.INFO)
    config = dataclasses.replace(
        ServerConfig.from_env(),
        host=args.host,
        port=args.port,
        db_url=args.db,
        max_workers=args.max_workers,
        reflection=not args.no_reflection,
        allow_private_webhooks=args.allow_private_webhooks,
        rate_limits=RateLimits(
            args.rate_limit_task, args.rate_limit_other, args.rate_limit_auth_failures
        ),
        shutdown_grace=args.shutdown_grace,
    )
    _open(config.db_url)
    created = teams.create_default_team_if_empty()
    if created is not None:
        team, key = created
        print(
            f"Created team 'default' (id {team.id}).\n"
            f"Its Team API Key, shown only this once:\n\n    {key}\n",
            file=sys.stderr,
            flush=True,
        )
    running = create_server(config)
    log.info("serving on %s:%d (database %s)", config.host, running.port, _safe_url(config.db_url))

    stopping = threading.Event()

    def on_signal(signum, frame):
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stopping.wait()
    log.info("shutting down: in-flight calls get %.0f s", config.shutdown_grace)
    running.stop(config.shutdown_grace)
    return 0


def _safe_url(url: str) -> str:
    """The URL without a password."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if at and ":" in credentials:
        return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"
    return url


def team_create(args: argparse.Namespace) -> int:
    _open(args.db)
    try:
        team, key = teams.create_team(args.name)
    except ValidationError as error:
        print(f"agenttasks: {error.message}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"teamId": team.id, "apiKey": key}))
    else:
        print(f"Team {team.name!r} created (id {team.id}).")
        print(f"Team API Key, shown only this once:\n\n    {key}\n")
    return 0


def migrate(args: argparse.Namespace) -> int:
    db.open_database(args.db)
    applied = migrations.migrate()
    version = migrations.current_version()
    print(f"schema at version {version}" + (f" (applied {applied})" if applied else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "team":
        return team_create(args)
    return migrate(args)


if __name__ == "__main__":
    sys.exit(main())
