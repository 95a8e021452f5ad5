"""Finding one row of a team by id: the single place that decides what is NOT_FOUND."""

from __future__ import annotations

from typing import Any, TypeVar

import peewee as pw

from .errors import NotFound
from .values import could_be_id

Row = TypeVar("Row", bound=pw.Model)


def one_of_team(
    query: pw.ModelSelect[Row], model: Any, team_id: str, resource_id: str, kind: str
) -> Row:
    """The row of `query` with this id in this team.

    Another team's id is NOT_FOUND exactly like a missing one; an id that cannot exist is
    answered without a query (see `could_be_id`).
    """
    row = None
    if could_be_id(resource_id):
        row = query.where((model.id == resource_id) & (model.team == team_id)).first()
    if row is None:
        raise NotFound.of(kind, resource_id)
    return row
