"""The documented errors, one class each, carrying their `code` and `statusCode`.

    AgentTasksError
    ├── Unauthorized           UNAUTHORIZED          401
    ├── Forbidden              FORBIDDEN             403
    ├── NotAssignedAgent       NOT_ASSIGNED_AGENT    403
    ├── NotFound               NOT_FOUND             404
    ├── ValidationError        VALIDATION_ERROR      400  (+ field violations)
    ├── Conflict                                     409
    │   ├── TaskAlreadyClaimed TASK_ALREADY_CLAIMED
    │   ├── TaskNotClaimable   TASK_NOT_CLAIMABLE
    │   ├── TaskNotInProgress  TASK_NOT_IN_PROGRESS
    │   ├── InvalidTransition  INVALID_TRANSITION
    │   ├── EtagMismatch       ETAG_MISMATCH
    │   └── ProjectNotEmpty    PROJECT_NOT_EMPTY
    ├── EventsExpired          EVENTS_EXPIRED        410  (a resume point retention passed)
    ├── RateLimited            RATE_LIMITED          429  (+ retry delay)
    └── InternalError          INTERNAL              500

The transport maps each class to a gRPC status in exactly one place
(`agenttasks.server.api.errors`); nothing here knows about gRPC.
"""

from __future__ import annotations

from dataclasses import dataclass

# Messages quote at most this many characters of any input, so an error always fits
# gRPC's default metadata limit (8 KB) however long the input was.
QUOTE_MAX = 100


def cut(value: str) -> str:
    """`value` cut to QUOTE_MAX characters, saying how long it was when it was longer."""
    if len(value) <= QUOTE_MAX:
        return value
    return f"{value[:QUOTE_MAX]}... ({len(value):,} characters)"


def quote(value: str) -> str:
    """`value` as a message quotes it: the repr of its first QUOTE_MAX characters."""
    if len(value) <= QUOTE_MAX:
        return repr(value)
    return repr(value[:QUOTE_MAX]) + f"... ({len(value):,} characters)"


def quote_all(values: list[str], most: int = 5) -> str:
    """Up to `most` values, each cut short, comma-separated, saying how many more there were."""
    shown = ", ".join(cut(value) for value in values[:most])
    return shown if len(values) <= most else f"{shown} and {len(values) - most} more"


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field: its path (e.g. `task.title`) and what is wrong."""

    field: str
    description: str


class AgentTasksError(Exception):
    """Base of every documented error; `message` is the body's `error`."""

    code = "INTERNAL"
    status_code = 500
    default_message = "Internal error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)


class Unauthorized(AgentTasksError):
    code = "UNAUTHORIZED"
    status_code = 401
    default_message = "Invalid or missing token"


class Forbidden(AgentTasksError):
    code = "FORBIDDEN"
    status_code = 403
    default_message = "Forbidden"


class NotAssignedAgent(AgentTasksError):
    code = "NOT_ASSIGNED_AGENT"
    status_code = 403
    default_message = "Task is assigned to another agent"


class NotFound(AgentTasksError):
    code = "NOT_FOUND"
    status_code = 404
    default_message = "Not found"

    @classmethod
    def of(cls, kind: str, resource_id: str) -> NotFound:
        # Ids of other teams land here too: the message must not tell them apart.
        return cls(f"{kind} {quote(resource_id)} not found")


class ValidationError(AgentTasksError):
    code = "VALIDATION_ERROR"
    status_code = 400
    default_message = "Invalid request"

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = violations
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))

    @classmethod
    def field(cls, field: str, description: str) -> ValidationError:
        return cls([FieldViolation(field, description)])


class Conflict(AgentTasksError):
    status_code = 409


class TaskAlreadyClaimed(Conflict):
    code = "TASK_ALREADY_CLAIMED"
    default_message = "Task is already claimed by another agent"


class TaskNotClaimable(Conflict):
    code = "TASK_NOT_CLAIMABLE"
    default_message = "Task cannot be claimed"


class TaskNotInProgress(Conflict):
    code = "TASK_NOT_IN_PROGRESS"
    default_message = "Task is not in progress"


class InvalidTransition(Conflict):
    code = "INVALID_TRANSITION"
    default_message = "Status transition not allowed"


class EtagMismatch(Conflict):
    code = "ETAG_MISMATCH"
    default_message = "The etag does not match the current task; read it again"


class ProjectNotEmpty(Conflict):
    code = "PROJECT_NOT_EMPTY"
    default_message = "Project still has tasks; delete them or pass force"


class EventsExpired(AgentTasksError):
    """WatchTasks resumed from an event older than retention keeps: some are gone."""

    code = "EVENTS_EXPIRED"
    status_code = 410
    default_message = "The events after this point are no longer kept"


class RateLimited(AgentTasksError):
    code = "RATE_LIMITED"
    status_code = 429
    default_message = "Rate limit exceeded"

    def __init__(self, retry_after_seconds: float, message: str | None = None) -> None:
        self.retry_after_seconds = retry_after_seconds
        super().__init__(message)


class InternalError(AgentTasksError):
    """Raised for nothing on purpose; unexpected exceptions are reported as this."""


def all_error_classes() -> list[type[AgentTasksError]]:
    """Every concrete documented error class (used to check the transport maps them all)."""
    found: list[type[AgentTasksError]] = []
    pending: list[type[AgentTasksError]] = [AgentTasksError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls is not AgentTasksError and cls is not Conflict:
            found.append(cls)
    return found
