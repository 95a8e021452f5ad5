"""Keyset pagination by (created_at, seq), oldest (or newest) first, with opaque tokens."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import peewee as pw

from .errors import ValidationError

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
# Tokens this module issues are under 100 characters; longer ones are refused unparsed.
PAGE_TOKEN_MAX = 200


@dataclass(frozen=True)
class Page:
    """Where a page starts and how long it is; `after` is the last row of the previous page."""

    size: int
    after: tuple[int, int] | None
    fingerprint: str


def _fingerprint(filters: tuple) -> str:
    # A token only continues the listing it came from: changing filters mid-way is refused.
    return hashlib.sha256(repr(filters).encode()).hexdigest()[:12]


def parse_page(page_size: int, page_token: str, filters: tuple = ()) -> Page:
    if page_size < 0:
        raise ValidationError.field("page_size", "must not be negative")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    fingerprint = _fingerprint(filters)
    if not page_token:
        return Page(size, None, fingerprint)
    if len(page_token) > PAGE_TOKEN_MAX:
        raise ValidationError.field("page_token", "is not a token this list returned")
    try:
        padded = page_token + "=" * (-len(page_token) % 4)
        created_at, seq, token_fingerprint = json.loads(base64.urlsafe_b64decode(padded))
        after = (int(created_at), int(seq))
        if not all(0 <= value < 2**63 for value in after):
            raise ValueError("outside the range of a stored value")
    except (
        ValueError,
        TypeError,
        OverflowError,
        RecursionError,  # deeply nested JSON
        binascii.Error,
        UnicodeDecodeError,
    ):
        raise ValidationError.field("page_token", "is not a token this list returned") from None
    if token_fingerprint != fingerprint:
        raise ValidationError.field("page_token", "was issued for a request with other filters")
    return Page(size, after, fingerprint)


def _token(created_at: int, seq: int, fingerprint: str) -> str:
    raw = json.dumps([created_at, seq, fingerprint], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def paginate(
    query: pw.ModelSelect[Any], model: Any, page: Page, *, newest_first: bool = False
) -> tuple[list, str]:
    """Runs `query` for one page; returns its rows and the next page's token ("" if last)."""
    ordered = keyset(query, model, page.after, newest_first=newest_first)
    return page_of(list(ordered.limit(page.size + 1)), page)


def keyset(
    query: pw.ModelSelect[Any], model: Any, after: tuple | None, *, newest_first: bool = False
) -> pw.ModelSelect[Any]:
    """`query` in page order, from just after the row keyed `after` (None: from the start)."""
    key = pw.Tuple(model.created_at, model.seq)
    if after is not None:
        query = query.where(key < pw.Tuple(*after) if newest_first else key > pw.Tuple(*after))
    order = (model.created_at, model.seq)
    if newest_first:
        order = (model.created_at.desc(), model.seq.desc())
    return query.order_by(*order)


def page_of(rows: list, page: Page) -> tuple[list, str]:
    """A page from the `page.size + 1` rows read for it, and the next page's token."""
    if len(rows) <= page.size:
        return rows, ""
    rows = rows[: page.size]
    last = rows[-1]
    return rows, next_token(page, last.created_at, last.seq)


def next_token(page: Page, created_at: int, seq: int) -> str:
    """The token of the page after one that ended with the row (created_at, seq)."""
    return _token(created_at, seq, page.fingerprint)
