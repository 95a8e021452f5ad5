"""Server settings: defaults, overridden by `AGENTTASKS_*` environment variables, then flags."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from .ratelimit import RateLimits
from .storage.db import DEFAULT_URL

T = TypeVar("T", int, float)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class ConfigError(Exception):
    """A setting that cannot be used; the message names it and says what to do.

    Not a ValueError on purpose: argparse turns a ValueError from a `type=` function into a
    usage screen, while a bad value deserves one line naming the setting.
    """


def number(setting: str, text: str, kind: Callable[[str], T], low: T, high: T | None = None) -> T:
    """`text` as a number in [low, high], or a ConfigError naming `setting`."""
    wanted = "a whole number" if kind is int else "a number"
    span = f"from {low} to {high}" if high is not None else f"of at least {low}"
    try:
        value = kind(text.strip())
    except ValueError:
        raise ConfigError(f"{setting} must be {wanted} {span}, not {text!r}") from None
    if value < low or (high is not None and value > high):
        raise ConfigError(f"{setting} must be {wanted} {span}, not {text!r}")
    return value


def port(setting: str, text: str) -> int:
    return number(setting, text, int, 0, 65535)


def log_level(setting: str, text: str) -> str:
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{setting} must be one of {', '.join(LOG_LEVELS)}, not {text!r}")
    return level


def log_format(setting: str, text: str) -> str:
    value = text.strip().lower()
    if value not in LOG_FORMATS:
        raise ConfigError(f"{setting} must be one of {', '.join(LOG_FORMATS)}, not {text!r}")
    return value


def flag(setting: str, text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE or not value:
        return False
    raise ConfigError(f"{setting} must be one of {'/'.join(_TRUE + _FALSE)}, not {text!r}")


def _env(name: str, parse: Callable[[str, str], T | str | bool], default):
    text = os.environ.get(name, "")
    return parse(name, text) if text.strip() else default


def count(low: int) -> Callable[[str, str], int]:
    return lambda setting, text: number(setting, text, int, low)


def seconds(setting: str, text: str) -> float:
    return number(setting, text, float, 0.0)


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in `text`: plain seconds (`3600`) or a number and one unit (`90s`, `15m`,
    `12h`, `7d`). Raises ValueError otherwise."""
    text = text.strip().lower()
    scale = _DURATION_UNITS.get(text[-1:], 0)
    seconds = float(text[:-1] if scale else text) * (scale or 1)
    if not 0 <= seconds < float("inf"):
        raise ValueError(text)
    return seconds


def duration(setting: str, text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError:
        raise ConfigError(
            f"{setting} must be a duration such as 3600, 90s, 15m, 12h or 7d, not {text!r}"
        ) from None


@dataclass(frozen=True)
class ServerConfig:
    host: str = "[::]"
    port: int = 50051
    db_url: str = DEFAULT_URL
    max_workers: int = 32
    # Server processes sharing the port (SO_REUSEPORT); 1 serves from this process.
    workers: int = 1
    reflection: bool = True
    allow_private_webhooks: bool = False
    rate_limits: RateLimits = field(default_factory=RateLimits)
    # Seconds that in-flight calls get to finish after SIGTERM/SIGINT.
    shutdown_grace: float = 10.0
    # Largest request accepted and response sent (a task's result alone may be 1 MiB).
    max_message_bytes: int = 8 * 1024 * 1024
    log_level: str = "INFO"
    # Background jobs (lease sweeper, event retention) beside the server.
    run_workers: bool = True
    log_format: str = "text"
    # Port of the Prometheus /metrics endpoint; 0 turns it off.
    metrics_port: int = 0
    # PEM files; with a certificate and key the server speaks TLS only.
    tls_cert: str | None = None
    tls_key: str | None = None
    # Clients must present a certificate signed by this CA (mutual TLS).
    tls_client_ca: str | None = None
    # Seconds task events are kept (WatchTasks can resume within it); 0 keeps them forever.
    event_retention: float = 7 * 86400.0
    # Seconds an endpoint may keep failing before it is disabled.
    webhook_disable_after: float = 3 * 86400.0

    @classmethod
    def from_env(cls) -> ServerConfig:
        """The defaults with every `AGENTTASKS_*` variable applied (ConfigError if bad)."""
        return cls(
            host=os.environ.get("AGENTTASKS_HOST", "").strip() or cls.host,
            port=_env("AGENTTASKS_PORT", port, cls.port),
            db_url=os.environ.get("AGENTTASKS_DB_URL", "").strip() or DEFAULT_URL,
            max_workers=_env("AGENTTASKS_MAX_WORKERS", count(1), cls.max_workers),
            reflection=not _env("AGENTTASKS_NO_REFLECTION", flag, False),
            allow_private_webhooks=_env("AGENTTASKS_ALLOW_PRIVATE_WEBHOOKS", flag, False),
            rate_limits=RateLimits(
                task=_env("AGENTTASKS_RATE_LIMIT_TASK", count(0), RateLimits.task),
                other=_env("AGENTTASKS_RATE_LIMIT_OTHER", count(0), RateLimits.other),
                auth_failures=_env(
                    "AGENTTASKS_RATE_LIMIT_AUTH_FAILURES", count(0), RateLimits.auth_failures
                ),
            ),
            shutdown_grace=_env("AGENTTASKS_SHUTDOWN_GRACE", seconds, cls.shutdown_grace),
            workers=_env("AGENTTASKS_WORKERS", count(1), cls.workers),
            log_level=_env("AGENTTASKS_LOG_LEVEL", log_level, cls.log_level),
            run_workers=not _env("AGENTTASKS_NO_WORKERS", flag, False),
            event_retention=_env("AGENTTASKS_EVENT_RETENTION", duration, cls.event_retention),
            webhook_disable_after=_env(
                "AGENTTASKS_WEBHOOK_DISABLE_AFTER", duration, cls.webhook_disable_after
            ),
            log_format=_env("AGENTTASKS_LOG_FORMAT", log_format, cls.log_format),
            metrics_port=_env("AGENTTASKS_METRICS_PORT", port, cls.metrics_port),
            tls_cert=os.environ.get("AGENTTASKS_TLS_CERT", "").strip() or None,
            tls_key=os.environ.get("AGENTTASKS_TLS_KEY", "").strip() or None,
            tls_client_ca=os.environ.get("AGENTTASKS_TLS_CLIENT_CA", "").strip() or None,
        )
