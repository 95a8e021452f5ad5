"""Ids and tokens without gRPC."""

from __future__ import annotations

import re

from agenttasks.server.domain.values import TokenKind, new_id, new_token, token_digest, token_kind


def test_ids_are_cuid_style_and_unique():
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[a-z][a-z0-9]{24}", value) for value in ids)


def test_tokens_have_their_documented_shape():
    assert re.fullmatch(r"tk_[0-9a-f]{64}", new_token(TokenKind.TEAM_API_KEY))
    assert re.fullmatch(r"at_[0-9a-f]{64}", new_token(TokenKind.AGENT))


def test_token_kind_accepts_only_well_formed_tokens():
    good = new_token(TokenKind.AGENT)
    assert token_kind(good) is TokenKind.AGENT
    for bad in ("", "at_", good[:-1], good + "0", good.upper(), "xx_" + good[3:], good[:-1] + "g"):
        assert token_kind(bad) is None


def test_only_a_digest_is_derived_for_storage():
    token = new_token(TokenKind.TEAM_API_KEY)
    digest = token_digest(token)
    assert re.fullmatch(r"[0-9a-f]{64}", digest) and token[3:] not in digest
