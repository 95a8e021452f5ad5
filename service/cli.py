"""The `agenttasks` command: serve, worker, team create, migrate."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import threading

from . import workers
from .config import ConfigError, ServerConfig, parse_duration
from .domain import teams
from .domain.errors import ValidationError
from .ratelimit import RateLimits
from .storage import db, migrations

log = logging.getLogger("agenttasks")


def _db_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=os.environ.get("AGENTTASKS_DB_URL", db.DEFAULT_URL),
        help="database URL: sqlite:///file.db, sqlite:////abs/file.db or "
        "postgresql://user@host:5432/db (env AGENTTASKS_DB_URL; default %(default)s)",
    )


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration such as 3600, 90s, 15m, 12h or 7d"
        ) from None


def _worker_arguments(parser: argparse.ArgumentParser, defaults: ServerConfig) -> None:
    parser.add_argument(
        "--event-retention",
        type=_duration,
        default=defaults.event_retention,
        help="how long task events are kept: seconds, or 90s, 15m, 12h, 7d; 0 keeps them "
        "forever (env AGENTTASKS_EVENT_RETENTION; default 7d)",
    )
    parser.add_argument("--log-level", default=os.environ.get("AGENTTASKS_LOG_LEVEL", "INFO"))


def _parser() -> argparse.ArgumentParser:
    defaults = ServerConfig.from_env()
    parser = argparse.ArgumentParser(prog="agenttasks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC server")
    _db_argument(serve)
    serve.add_argument("--host", default=defaults.host, help="listen address (default %(default)s)")
    serve.add_argument("--port", type=int, default=defaults.port, help="default %(default)s")
    serve.add_argument(
        "--workers",
        type=int,
        default=defaults.workers,
        help="server processes sharing the port (default %(default)s)",
    )
    serve.add_argument(
        "--max-workers",
        type=int,
        default=defaults.max_workers,
        help="threads serving calls concurrently in each process (default %(default)s)",
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
    serve.add_argument(
        "--no-workers",
        action="store_true",
        default=not defaults.run_workers,
        help="serve only: run no background jobs (env AGENTTASKS_NO_WORKERS=1)",
    )
    _worker_arguments(serve, defaults)

    worker = commands.add_parser(
        "worker", help="run the background jobs only (lease sweeper, event retention)"
    )
    _db_argument(worker)
    _worker_arguments(worker, defaults)

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


def _configure_logging(level_name: str) -> None:
    level = logging.getLevelName(level_name.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Peewee logs every statement with its parameters at DEBUG; those may hold secrets
    # (webhook signing keys), so its statements stay out of the log at any level.
    logging.getLogger("peewee").setLevel(logging.INFO)


def serve(args: argparse.Namespace) -> int:
    _configure_logging(args.log_level)
    config = dataclasses.replace(
        ServerConfig.from_env(),
        host=args.host,
        port=args.port,
        db_url=args.db,
        workers=args.workers,
        max_workers=args.max_workers,
        reflection=not args.no_reflection,
        allow_private_webhooks=args.allow_private_webhooks,
        rate_limits=RateLimits(
            args.rate_limit_task, args.rate_limit_other, args.rate_limit_auth_failures
        ),
        shutdown_grace=args.shutdown_grace,
        run_workers=not args.no_workers,
        event_retention=args.event_retention,
    )
    if config.workers < 1 or (config.workers > 1 and config.port == 0):
        raise ConfigError("--workers must be at least 1, and more than 1 needs a fixed --port")
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
    if config.workers == 1:
        return _serve_here(config)
    return _serve_in_processes(config)


def _wait_for_signal() -> None:
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    stopping.wait()


def _serve_here(config: ServerConfig) -> int:
    from .server import create_server  # grpc starts only in the process that serves

    running = create_server(config)
    log.info(
        "serving on %s:%d (database %s, pid %d)",
        config.host,
        running.port,
        _safe_url(config.db_url),
        os.getpid(),
    )
    runner = workers.start(config)
    _wait_for_signal()
    log.info("shutting down: in-flight calls get %.0f s", config.shutdown_grace)
    runner.stop(config.shutdown_grace)
    running.stop(config.shutdown_grace)
    return 0


def worker(args: argparse.Namespace) -> int:
    """Runs the background jobs until SIGTERM/SIGINT, then finishes the items in hand."""
    _configure_logging(args.log_level)
    config = dataclasses.replace(
        ServerConfig.from_env(), db_url=args.db, event_retention=args.event_retention
    )
    _open(config.db_url)
    runner = workers.start(dataclasses.replace(config, run_workers=True))
    log.info("worker running (database %s, pid %d)", _safe_url(config.db_url), os.getpid())
    _wait_for_signal()
    runner.stop(config.shutdown_grace)
    return 0


def _serve_in_processes(config: ServerConfig) -> int:
    """Forks `workers` servers that share the port; signals are passed on to them."""
    db.close()  # no database connection may cross a fork
    children = []
    for _ in range(config.workers):
        pid = os.fork()
        if pid == 0:  # the child: gRPC has not started in this process tree yet
            code = 1
            try:
                db.open_database(config.db_url)
                code = _serve_here(config)
            finally:
                os._exit(code)
        children.append(pid)
    _wait_for_signal()
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    return max(codes, key=abs)


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
    try:
        args = _parser().parse_args(argv)
        if args.command == "serve":
            return serve(args)
        if args.command == "worker":
            return worker(args)
        if args.command == "team":
            return team_create(args)
        return migrate(args)
    except ConfigError as error:
        print(f"agenttasks: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
