"""Field checks that collect every violation of a request before answering."""

from __future__ import annotations

from .errors import FieldViolation, ValidationError, quote_all
from .values import MICROS

NAME_MAX = 200
DESCRIPTION_MAX = 10_000
REQUEST_ID_MAX = 200
MAX_GRACE_US = 24 * 3600 * MICROS


class Checks:
    """Accumulates field violations; `done()` raises them all as one VALIDATION_ERROR."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def fail(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(field, description))

    def _no_nul(self, field: str, value: str) -> None:
        # PostgreSQL cannot store NUL in text and SQLite can: refusing it everywhere keeps
        # the two backends' answers the same (VALIDATION_ERROR, never INTERNAL).
        if "\x00" in value:
            self.fail(field, "must not contain NUL characters")

    def required(self, field: str, value: str) -> str:
        """An id the request must name (AIP REQUIRED): empty is a violation, not NOT_FOUND."""
        if not value:
            self.fail(field, "is required")
        return value

    def name(self, field: str, value: str, max_length: int = NAME_MAX) -> str:
        """A required display text: trimmed, then 1..max_length characters."""
        trimmed = value.strip()
        if not trimmed:
            self.fail(field, "must not be empty")
        elif len(trimmed) > max_length:
            self.fail(field, f"must be at most {max_length} characters after trimming")
        else:
            self._no_nul(field, trimmed)
        return trimmed

    def text(self, field: str, value: str, max_length: int = DESCRIPTION_MAX) -> str:
        if len(value) > max_length:
            self.fail(field, f"must be at most {max_length:,} characters")
        else:
            self._no_nul(field, value)
        return value

    def utf8(self, field: str, value: str, max_bytes: int) -> str:
        if len(value) > max_bytes // 4 and len(value.encode()) > max_bytes:
            self.fail(field, f"must be at most {max_bytes:,} bytes of UTF-8")
        else:
            self._no_nul(field, value)
        return value

    def request_id(self, value: str) -> str:
        if len(value) > REQUEST_ID_MAX:
            self.fail("request_id", f"must be at most {REQUEST_ID_MAX} characters")
        else:
            self._no_nul("request_id", value)
        return value

    def duration(self, field: str, micros: int | None, maximum: int) -> int | None:
        if micros is not None and not 0 <= micros <= maximum:
            self.fail(field, f"must be between 0 and {maximum // MICROS} seconds")
        return micros

    def whole(self, field: str, value: int, minimum: int, maximum: int) -> int:
        if not minimum <= value <= maximum:
            self.fail(field, f"must be between {minimum} and {maximum}")
        return value

    def done(self) -> None:
        if self.violations:
            raise ValidationError(self.violations)


def unknown_fields(changes: dict, writable: set[str]) -> None:
    """Refuses update_mask paths that are not writable."""
    bad = sorted(set(changes) - writable)
    if bad:
        raise mask_error(bad, writable)


def mask_error(bad: list[str], writable: set[str] | dict) -> ValidationError:
    """The answer to update_mask paths that are not writable (quoting a few, cut short)."""
    return ValidationError.field(
        "update_mask", f"cannot update {quote_all(bad)}; writable: {', '.join(sorted(writable))}"
    )
