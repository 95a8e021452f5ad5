"""Finding one row of a team by id: the single place that decides what is NOT_FOUND."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import peewee as pw

from ..storage.prepared import Param, Statement
from .errors import NotFound
from .values import could_be_id


def by_id_in_team(select: Callable[[], pw.ModelSelect[Any]]) -> Statement[Any]:
    """The statement `one_of_team` runs: `select()` narrowed to one id of one team, built once."""

    def build() -> pw.ModelSelect[Any]:
        query = select()
        model = query.model
        return query.where((model.id == Param("id")) & (model.team == Param("team")))

    return Statement(build)


def one_of_team(statement: Statement[Any], team_id: str, resource_id: str, kind: str) -> Any:
    """The row `statement` (see `by_id_in_team`) finds with this id in this team.

    Another team's id is NOT_FOUND exactly like a missing one; an id that cannot exist is
    answered without a query (see `could_be_id`).
    """
    row = None
    if could_be_id(resource_id):
        row = statement.first(id=resource_id, team=team_id)
    if row is None:
        raise NotFound.of(kind, resource_id)
    return row
