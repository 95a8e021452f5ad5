"""Server settings: defaults, overridden by `AGENTTASKS_*` environment variables, then flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .ratelimit import RateLimits
from .storage.db import DEFAULT_URL


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it."""


def _env_number(name: str, default: float, kind: type = int):
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {value!r}") from None


def _env_int(name: str, default: int) -> int:
    return _env_number(name, default, int)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


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


def _env_duration(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return parse_duration(value)
    except ValueError:
        raise ConfigError(
            f"{name} must be a duration such as 3600, 90s, 15m, 12h or 7d, not {value!r}"
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
    # Background jobs (lease sweeper, event retention) beside the server.
    run_workers: bool = True
    # Seconds task events are kept (WatchTasks can resume within it); 0 keeps them forever.
    event_retention: float = 7 * 86400.0
    # Seconds an endpoint may keep failing before it is disabled.
    webhook_disable_after: float = 3 * 86400.0

    @classmethod
    def from_env(cls) -> ServerConfig:
        return cls(
            host=os.environ.get("AGENTTASKS_HOST", cls.host),
            port=_env_int("AGENTTASKS_PORT", cls.port),
            db_url=os.environ.get("AGENTTASKS_DB_URL", DEFAULT_URL),
            max_workers=_env_int("AGENTTASKS_MAX_WORKERS", cls.max_workers),
            reflection=not _env_flag("AGENTTASKS_NO_REFLECTION"),
            allow_private_webhooks=_env_flag("AGENTTASKS_ALLOW_PRIVATE_WEBHOOKS"),
            rate_limits=RateLimits(
                task=_env_int("AGENTTASKS_RATE_LIMIT_TASK", RateLimits.task),
                other=_env_int("AGENTTASKS_RATE_LIMIT_OTHER", RateLimits.other),
                auth_failures=_env_int(
                    "AGENTTASKS_RATE_LIMIT_AUTH_FAILURES", RateLimits.auth_failures
                ),
            ),
            shutdown_grace=_env_number("AGENTTASKS_SHUTDOWN_GRACE", cls.shutdown_grace, float),
            workers=_env_int("AGENTTASKS_WORKERS", cls.workers),
            run_workers=not _env_flag("AGENTTASKS_NO_WORKERS"),
            event_retention=_env_duration("AGENTTASKS_EVENT_RETENTION", cls.event_retention),
            webhook_disable_after=_env_duration(
                "AGENTTASKS_WEBHOOK_DISABLE_AFTER", cls.webhook_disable_after
            ),
        )
