"""The `agenttasks` command: serve, worker, team create/list/rotate-key, migrate."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from importlib import metadata

from . import cli_teams, config, listen, logs, tls, workers
from .config import ConfigError, ServerConfig
from .connections import pool_size
from .domain import teams
from .ratelimit import RateLimits
from .storage import db, migrations

log = logging.getLogger("agenttasks")

PARENT_WATCH_S = 1.0  # how often a forked server looks whether its parent still runs


def _setting(flag: str, parse: Callable[[str, str], object]) -> Callable[[str], object]:
    """An argparse `type` that names `flag` in its one-line error (a ConfigError)."""
    return lambda text: parse(flag, text)


def _db_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        metavar="URL",
        default=os.environ.get("AGENTTASKS_DB_URL", "").strip() or db.DEFAULT_URL,
        help="database URL: sqlite:///relative.db, sqlite:////abs/path.db or "
        "postgresql://user@host:5432/db (env AGENTTASKS_DB_URL; default %(default)s)",
    )


def _version() -> str:
    try:
        return metadata.version("agenttasks-grpc")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def _worker_arguments(parser: argparse.ArgumentParser, defaults: ServerConfig) -> None:
    """Options of everything that runs the background jobs (serve and worker)."""
    parser.add_argument(
        "--event-retention",
        metavar="DURATION",
        type=_setting("--event-retention", config.duration),
        default=defaults.event_retention,
        help="how long task events are kept: seconds, or 90s, 15m, 12h, 7d; 0 keeps them "
        "forever (env AGENTTASKS_EVENT_RETENTION; default 7d)",
    )
    parser.add_argument(
        "--log-level",
        metavar="LEVEL",
        type=_setting("--log-level", config.log_level),
        default=defaults.log_level,
        help=f"one of {', '.join(config.LOG_LEVELS)} (env AGENTTASKS_LOG_LEVEL; "
        "default %(default)s)",
    )
    parser.add_argument(
        "--log-format",
        metavar="FORMAT",
        type=_setting("--log-format", config.log_format),
        default=defaults.log_format,
        help="text, or json: one JSON object per line (env AGENTTASKS_LOG_FORMAT; "
        "default %(default)s)",
    )


def _parser() -> argparse.ArgumentParser:
    defaults = ServerConfig.from_env()
    parser = argparse.ArgumentParser(prog="agenttasks", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC server")
    serve.set_defaults(run=run_serve, usage_of=serve)
    _db_argument(serve)
    option = serve.add_argument
    option(
        "--host",
        metavar="H",
        default=defaults.host,
        help="listen address (env AGENTTASKS_HOST; default %(default)s)",
    )
    option(
        "--port",
        metavar="P",
        type=_setting("--port", config.port),
        default=defaults.port,
        help="listen port, 0-65535; 0 picks a free one (env AGENTTASKS_PORT; default %(default)s)",
    )
    option(
        "--workers",
        metavar="N",
        type=_setting("--workers", config.count(1)),
        default=defaults.workers,
        help="server processes sharing the port (env AGENTTASKS_WORKERS; default %(default)s)",
    )
    option(
        "--max-workers",
        metavar="N",
        type=_setting("--max-workers", config.count(1)),
        default=defaults.max_workers,
        help="threads serving calls concurrently in each process "
        "(env AGENTTASKS_MAX_WORKERS; default %(default)s)",
    )
    option(
        "--no-reflection",
        action="store_true",
        default=not defaults.reflection,
        help="turn server reflection off (env AGENTTASKS_NO_REFLECTION=1)",
    )
    option(
        "--allow-private-webhooks",
        action="store_true",
        default=defaults.allow_private_webhooks,
        help="let webhooks target private and loopback addresses, for development "
        "(env AGENTTASKS_ALLOW_PRIVATE_WEBHOOKS=1)",
    )
    for flag, env, default, what in (
        ("task", "TASK", defaults.rate_limits.task, "TaskService calls per token per minute"),
        ("other", "OTHER", defaults.rate_limits.other, "other calls per token per minute"),
        (
            "auth-failures",
            "AUTH_FAILURES",
            defaults.rate_limits.auth_failures,
            "failed authentications per client address per minute",
        ),
    ):
        option(
            f"--rate-limit-{flag}",
            metavar="N",
            type=_setting(f"--rate-limit-{flag}", config.count(0)),
            default=default,
            help=f"{what}, 0 disables (env AGENTTASKS_RATE_LIMIT_{env}; default %(default)s)",
        )
    option(
        "--shutdown-grace",
        metavar="SECONDS",
        type=_setting("--shutdown-grace", config.seconds),
        default=defaults.shutdown_grace,
        help="seconds in-flight calls get on SIGTERM/SIGINT "
        "(env AGENTTASKS_SHUTDOWN_GRACE; default %(default)s)",
    )
    option(
        "--no-workers",
        action="store_true",
        default=not defaults.run_workers,
        help="serve only: run no background jobs (env AGENTTASKS_NO_WORKERS=1)",
    )
    option(
        "--metrics-port",
        metavar="N",
        type=_setting("--metrics-port", config.port),
        default=defaults.metrics_port,
        help="serve Prometheus metrics at http://HOST:N/metrics; 0 turns them off; with "
        "--workers, process i uses N+i (env AGENTTASKS_METRICS_PORT; default off)",
    )
    for name, env, what in (
        ("cert", "CERT", "PEM certificate (chain) of the server; with --tls-key, TLS only"),
        ("key", "KEY", "PEM private key of --tls-cert"),
        ("client-ca", "CLIENT_CA", "PEM CA certificates: clients must present one it signed"),
    ):
        option(
            f"--tls-{name}",
            metavar="FILE",
            default=getattr(defaults, f"tls_{name.replace('-', '_')}"),
            help=f"{what} (env AGENTTASKS_TLS_{env})",
        )
    _worker_arguments(serve, defaults)

    worker = commands.add_parser(
        "worker", help="run the background jobs only (lease sweeper, event retention)"
    )
    worker.set_defaults(run=run_worker, usage_of=worker)
    _db_argument(worker)
    _worker_arguments(worker, defaults)

    team = commands.add_parser("team", help="manage teams and recover their keys")
    cli_teams.add_commands(team.add_subparsers(dest="team_command", required=True), _db_argument)

    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate.set_defaults(run=run_migrate, usage_of=migrate)
    _db_argument(migrate)
    return parser


def _connect(url: str, max_connections: int | None = None) -> None:
    """Connects at once: a bad URL or an unreachable database is a ConfigError.

    `max_connections` bounds the PostgreSQL pool (connections.pool_size); commands that
    run on one thread need no bound.
    """
    try:
        db.open_database(url, max_connections)
    except db.DatabaseUnavailable as error:
        raise ConfigError(f"--db (or AGENTTASKS_DB_URL): {error}") from None


def _open(url: str, max_connections: int | None = None) -> None:
    _connect(url, max_connections)
    migrations.migrate()


def run_serve(args: argparse.Namespace) -> int:
    logs.configure(args.log_level, args.log_format)
    settings = dataclasses.replace(
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
        log_level=args.log_level,
        run_workers=not args.no_workers,
        event_retention=args.event_retention,
        log_format=args.log_format,
        metrics_port=args.metrics_port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
    )
    if settings.workers > 1 and settings.port == 0:
        raise ConfigError("--workers: more than 1 needs a fixed --port (not 0)")
    if settings.metrics_port and settings.metrics_port + settings.workers - 1 > 65535:
        raise ConfigError("--metrics-port: N + --workers - 1 must be at most 65535")
    tls.check(settings)  # a bad certificate is a bad setting, before anything starts
    if settings.port != 0:
        listen.ensure_free(settings.host, settings.port)
    _open(settings.db_url, pool_size(settings, serving=True))
    created = teams.create_default_team_if_empty()
    if created is not None:
        team, key = created
        print(
            f"Created team 'default' (id {team.id}).\n"
            f"Its Team API Key, shown only this once:\n\n    {key}\n\n"
            "Lost it? `agenttasks team rotate-key --name default` prints a new one.\n",
            file=sys.stderr,
            flush=True,
        )
    if settings.workers == 1:
        return _serve_here(settings)
    return _serve_in_processes(settings)


def _catch_stop_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT; installed before any work starts, so a signal
    that arrives while the server or jobs start up stops them gracefully too."""
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    return stopping


def _serve_here(settings: ServerConfig) -> int:
    from .server import create_server  # grpc starts only in the process that serves

    stopping = _catch_stop_signals()
    db.release_connection()  # the start-up's: calls and jobs may use it from now on
    running = create_server(settings)
    log.info(
        "serving on %s:%d (database %s, pid %d)",
        settings.host,
        running.port,
        db.safe_url(settings.db_url),
        os.getpid(),
    )
    runner = workers.start(settings)
    stopping.wait()
    log.info("shutting down: in-flight calls get %.0f s", settings.shutdown_grace)
    runner.stop(settings.shutdown_grace)
    running.stop(settings.shutdown_grace)
    return 0


def run_worker(args: argparse.Namespace) -> int:
    """Runs the background jobs until SIGTERM/SIGINT, then finishes the items in hand."""
    logs.configure(args.log_level, args.log_format)
    settings = dataclasses.replace(
        ServerConfig.from_env(),
        db_url=args.db,
        event_retention=args.event_retention,
        run_workers=True,
    )
    _open(settings.db_url, pool_size(settings, serving=False))
    db.release_connection()  # the start-up's: the jobs may use it from now on
    stopping = _catch_stop_signals()
    runner = workers.start(settings)
    log.info("worker running (database %s, pid %d)", db.safe_url(settings.db_url), os.getpid())
    stopping.wait()
    runner.stop(settings.shutdown_grace)
    return 0


def _serve_in_processes(settings: ServerConfig) -> int:
    """Forks `workers` servers that share the port; signals are passed on to them."""
    db.close()  # no database connection may cross a fork
    stopping = _catch_stop_signals()
    children = []
    parent = os.getpid()
    for index in range(settings.workers):
        pid = os.fork()
        if pid == 0:  # the child: gRPC has not started in this process tree yet
            code = 1
            try:
                _stop_with(parent)
                db.open_database(settings.db_url, pool_size(settings, serving=True))
                # Each process counts its own calls, so each serves metrics on its own port.
                metrics_port = settings.metrics_port and settings.metrics_port + index
                code = _serve_here(dataclasses.replace(settings, metrics_port=metrics_port))
            finally:
                os._exit(code)
        children.append(pid)
    stopping.wait()
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    return max(codes, key=abs)


def _stop_with(parent: int) -> None:
    """Makes this forked server stop, as on SIGTERM, within a second of its parent's end.

    A parent killed outright (SIGKILL, the OOM killer) passes no signal on: its servers
    would go on answering on the port, beside whatever replaces them, until killed by hand.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_WATCH_S)
        log.warning("the parent process %d is gone: stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def run_migrate(args: argparse.Namespace) -> int:
    _connect(args.db)
    applied = migrations.migrate()
    version = migrations.current_version()
    print(f"schema at version {version}" + (f" (applied {applied})" if applied else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args, unknown = _parser().parse_known_args(argv)
        if unknown:  # the usage of the command that was mistyped, not the top level's
            args.usage_of.error(f"unrecognized arguments: {' '.join(unknown)}")
        if args.command == "team":
            _open(args.db)
        return args.run(args)
    except (ConfigError, migrations.SchemaTooNew) as error:
        print(f"agenttasks: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
