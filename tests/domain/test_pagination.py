"""Page tokens without gRPC: opaque, bound to their filters, refused when forged."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agenttasks.server.domain.errors import ValidationError
from agenttasks.server.domain.pagination import _token, parse_page


def test_page_size_defaults_to_50_and_clamps_at_100():
    assert parse_page(0, "").size == 50
    assert parse_page(7, "").size == 7
    assert parse_page(10_000, "").size == 100
    with pytest.raises(ValidationError):
        parse_page(-1, "")


def test_a_token_continues_only_the_listing_it_came_from():
    page = parse_page(10, "", ("tasks", "team-a"))
    token = _token(123, 4, page.fingerprint)
    assert parse_page(10, token, ("tasks", "team-a")).after == (123, 4)
    with pytest.raises(ValidationError) as caught:
        parse_page(10, token, ("tasks", "team-b"))
    assert caught.value.violations[0].field == "page_token"


@given(st.text())
def test_no_forged_token_gets_past_validation(garbage):
    try:
        page = parse_page(10, garbage, ())
    except ValidationError as error:
        assert error.violations[0].field == "page_token"
    else:
        assert garbage == "" or page.after is not None
