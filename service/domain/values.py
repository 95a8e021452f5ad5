"""Small value types and helpers shared by the domain: callers, time, ids, secrets."""

from __future__ import annotations

import enum
import hashlib
import itertools
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass

from .errors import Forbidden

# Times are stored and passed around as integer microseconds since the Unix epoch (UTC):
# both backends compare and sort them the same way, and no time zone can slip in.
MICROS = 1_000_000


def now_us() -> int:
    return time.time_ns() // 1000


class TokenKind(enum.Enum):
    TEAM_API_KEY = "team"
    AGENT = "agent"


@dataclass(frozen=True)
class Caller:
    """Who is calling: resolved from the token by the transport, passed to every domain call."""

    team_id: str
    kind: TokenKind
    agent_id: str | None = None
    agent_name: str | None = None  # for the events it causes, so they need no lookup

    @property
    def is_agent(self) -> bool:
        return self.kind is TokenKind.AGENT


# --- ids -----------------------------------------------------------------------------------

_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_counter = itertools.count(int.from_bytes(os.urandom(2), "big"))
_counter_lock = threading.Lock()


def _base36(value: int, width: int) -> str:
    digits = []
    for _ in range(width):
        value, digit = divmod(value, 36)
        digits.append(_BASE36[digit])
    return "".join(reversed(digits))


# Every id this service issues has this shape (the columns hold 32 characters).
_ID_SHAPE = re.compile(r"[a-z][a-z0-9]{0,31}")


def could_be_id(value: str) -> bool:
    """Whether `value` has the shape of an id. Anything else names nothing and is answered
    without a query: PostgreSQL refuses parameters holding NUL where SQLite looks them up,
    so only this keeps the two backends' answers the same (NOT_FOUND, never INTERNAL)."""
    return _ID_SHAPE.fullmatch(value) is not None


def new_id() -> str:
    """A CUID-style id: `c` + time (ms) + counter + randomness, 25 lowercase characters.

    Sortable by creation time within a process; uniqueness comes from 10 random base36 digits.
    """
    with _counter_lock:
        count = next(_counter) % 36**4
    millis = time.time_ns() // 1_000_000
    randomness = secrets.randbelow(36**10)
    return "c" + _base36(millis, 10) + _base36(count, 4) + _base36(randomness, 10)


# --- secrets -------------------------------------------------------------------------------

TEAM_KEY_PREFIX = "tk_"
AGENT_TOKEN_PREFIX = "at_"
_TOKEN_HEX_LENGTH = 64
_PREFIX_KIND = {TEAM_KEY_PREFIX: TokenKind.TEAM_API_KEY, AGENT_TOKEN_PREFIX: TokenKind.AGENT}
_KIND_PREFIX = {kind: prefix for prefix, kind in _PREFIX_KIND.items()}
_HEX = frozenset("0123456789abcdef")


def new_token(kind: TokenKind) -> str:
    """A fresh secret: prefix + 64 lowercase hex characters (32 bytes from `secrets`)."""
    return _KIND_PREFIX[kind] + secrets.token_hex(32)


def token_digest(token: str) -> str:
    """What is stored instead of the token: its SHA-256 hex digest."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_kind(token: str) -> TokenKind | None:
    """The kind a well-formed token claims to be, or None if it is malformed."""
    kind = _PREFIX_KIND.get(token[:3])
    body = token[3:]
    if kind is None or len(body) != _TOKEN_HEX_LENGTH or not _HEX.issuperset(body):
        return None
    return kind


def own_team(caller: Caller, team_id: str) -> str:
    """The team a request works on: the caller's; naming another team is FORBIDDEN."""
    if team_id and team_id != caller.team_id:
        raise Forbidden("team_id does not match the caller's team")
    return caller.team_id
