"""Server settings: defaults, overridden by `AGENTTASKS_*` environment variables, then flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .auth import RateLimits
from .storage.db import DEFAULT_URL


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "[::]"
    port: int = 50051
    db_url: str = DEFAULT_URL
    max_workers: int = 32
    reflection: bool = True
    allow_private_webhooks: bool = False
    rate_limits: RateLimits = field(default_factory=RateLimits)
    # Seconds that in-flight calls get to finish after SIGTERM/SIGINT.
    shutdown_grace: float = 10.0
    # Largest request accepted and response sent (a task's result alone may be 1 MiB).
    max_message_bytes: int = 8 * 1024 * 1024

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
            shutdown_grace=float(os.environ.get("AGENTTASKS_SHUTDOWN_GRACE", cls.shutdown_grace)),
        )
