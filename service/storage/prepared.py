"""Statements built once: a Peewee query with named parameters, made into SQL text the first
time it runs on a backend and executed directly from then on.

Peewee turns a query into SQL on every execution, and for a row of twenty columns that takes
a few hundred microseconds, many times what SQLite needs to answer it. The hot paths
(the domain's task, lease and lookup queries, task and event writes) write their queries
with the builder, where they read like the rest of the code, and pay for building them
once per process.

    by_id = Statement(lambda: Task.select().where(Task.id == Param("id")))
    task = by_id.first(id="c00...")

Values are passed as the database stores them (strings, integers, None): no field
conversion runs, so a statement only takes parameters of plain columns.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any, Generic, TypeVar

import peewee as pw

from .db import database

M = TypeVar("M", bound=pw.Model)
# A statement as built for one backend: SQL text, its values (`_Slot`s where parameters go),
# the row reader and the selected column names.
_Built = tuple[str, tuple[Any, ...], Callable[[tuple], Any], tuple[str, ...]]


class _Slot:
    """Where a named parameter sits in the built statement's parameter list."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class Param(pw.Node):
    """A named parameter, filled in when the statement runs."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __sql__(self, ctx: pw.Context) -> pw.Context:
        return ctx.value(_Slot(self.name), converter=False)


class Statement(Generic[M]):
    """A query built by `build` once per database backend, run with named parameters.

    Select statements return model instances of `build()`'s model, holding the selected
    columns; constants written into the query (not `Param`s) are kept in place.
    """

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._built: dict[type, _Built] = {}

    def _text(self) -> _Built:
        backend = type(database.obj)
        built = self._built.get(backend)
        if built is None:
            built = self._built[backend] = self._compile()
        return built

    def _compile(self) -> _Built:
        """(SQL text, its values with `_Slot`s for parameters, row reader, column names)."""
        query = self._build()
        text, values = query.sql()
        model = getattr(query, "model", None)
        selected = tuple(getattr(query, "_returning", ()) or ())
        named = [_column_name(node) for node in selected]
        columns = tuple(name for name in named if name is not None)
        reader: Callable[[tuple], Any] = _unreadable
        if model is not None and len(columns) == len(named):
            reader = _reader(model, columns, selected)
        return text, tuple(values), reader, columns

    def sql(self, **params: Any) -> tuple[str, list[Any]]:
        """The SQL text for the open database and its parameters, in order."""
        text, values, _, _ = self._text()
        return text, [params[v.name] if isinstance(v, _Slot) else v for v in values]

    def execute(self, **params: Any) -> Any:
        """Runs the statement; returns the DB-API cursor."""
        return database.execute_sql(*self.sql(**params))

    def all(self, **params: Any) -> list[M]:
        read = self._text()[2]
        return [read(row) for row in self.execute(**params).fetchall()]

    def first(self, **params: Any) -> M | None:
        read = self._text()[2]
        row = self.execute(**params).fetchone()
        return None if row is None else read(row)

    def scalar(self, **params: Any) -> Any:
        row = self.execute(**params).fetchone()
        return None if row is None else row[0]


class UnionAll(Statement[M]):
    """The rows of several select statements of one model as one statement: each part a
    subquery of its own, UNION ALL, in `order` (fields), the first `limit` (a parameter).

    Each part is planned alone, so a part that reads one index range in `order` with its
    own limit stays that, however the others are read; the union only merges their rows.
    One statement, so on PostgreSQL too every part sees the same snapshot.
    """

    def __init__(
        self, parts: list[Callable[[], Any]], order: tuple[pw.Field, ...], limit: str
    ) -> None:
        super().__init__(lambda: None)  # unused: the parts build themselves
        self._parts = [Statement[M](part) for part in parts]
        self._order = order
        self._limit = limit

    def _compile(self) -> _Built:
        texts: list[str] = []
        values: list[Any] = []
        read: Any = _unreadable
        columns: tuple[str, ...] = ()
        for index, part in enumerate(self._parts):
            text, part_values, read, part_columns = part._compile()
            if index and part_columns != columns:
                raise TypeError("the parts of a union select the same columns")
            columns = part_columns
            texts.append(f"SELECT * FROM ({text}) AS part{index}")
            values.extend(part_values)
        order = ", ".join(f'"{field.column_name}"' for field in self._order)
        text = " UNION ALL ".join(texts) + f" ORDER BY {order} LIMIT {database.obj.param}"
        values.append(_Slot(self._limit))
        return text, tuple(values), read, columns


# Fields whose stored value is already what Python reads; others (booleans on SQLite, say)
# go through the field's own conversion.
_AS_STORED = (pw.CharField, pw.TextField, pw.IntegerField, pw.AutoField, pw.ForeignKeyField)


def _reader(
    model: type[M], columns: tuple[str, ...], selected: tuple[Any, ...]
) -> Callable[[tuple], M]:
    """Builds model instances from rows of `columns`, as Peewee's own cursor would."""
    convert = [
        (index, node.python_value)
        for index, node in enumerate(selected)
        if isinstance(node, pw.Field) and not isinstance(node, _AS_STORED)
    ]

    fields = sum(isinstance(node, pw.Field) for node in selected)
    if columns[fields:] and not all(isinstance(node, pw.Field) for node in selected[:fields]):
        raise TypeError("a prepared statement selects its fields before any alias")

    def read(stored: tuple) -> M:
        row: Any = stored
        if convert:
            row = list(stored)
            for index, python_value in convert:
                row[index] = python_value(row[index])
        instance = model(__no_default__=1)
        instance.__data__ = dict(zip(columns[:fields], row[:fields], strict=True))
        for name, value in zip(columns[fields:], row[fields:], strict=True):
            setattr(instance, name, value)  # computed columns (counts) are plain attributes
        return instance

    return read


def _unreadable(row: tuple) -> Any:
    raise TypeError("this statement selects more than fields and named values: use scalar()")


def _column_name(node: Any) -> str | None:
    if isinstance(node, pw.Field):
        return node.name
    if isinstance(node, pw.Alias):
        return node.name
    alias = getattr(node, "_alias", None)  # a subquery given a name (a count, say)
    return alias if isinstance(alias, str) else None


# --- writes of whole rows ------------------------------------------------------------------


@cache
def _write_statement(kind: str, model: type[pw.Model], names: tuple[str, ...]) -> Statement:
    """INSERT of the fields `names`, or UPDATE of them by primary key (parameter `pk`)."""
    fields = model._meta.fields
    values = {fields[name]: Param(name) for name in names}
    if kind == "insert":
        return Statement(lambda: model.insert(values))
    pk = model._meta.primary_key
    return Statement(lambda: model.update(values).where(pk == Param("pk")))


def insert(model: type[pw.Model], values: dict[str, Any]) -> int:
    """Inserts one row of `values` (field name: stored value); returns its primary key."""
    names = tuple(sorted(values))
    cursor = _write_statement("insert", model, names).execute(**values)
    if database.returning_clause:
        return cursor.fetchone()[0]
    return cursor.lastrowid


def save(instance: pw.Model, *, force_insert: bool = False) -> None:
    """`instance.save()` for rows of an auto-numbered key, through statements built once.

    A new row is inserted with every field set, and gets its primary key. An existing one
    is updated in the fields assigned since it was read (Peewee's dirty fields): an UPDATE
    that names an indexed column rewrites that index's entry even when the value is the
    same, and a task row has a dozen indexes.
    """
    model = type(instance)
    pk_name: str = model._meta.primary_key.name  # type: ignore[union-attr]
    data = instance.__data__
    pk = data.get(pk_name)
    if force_insert or pk is None:
        data[pk_name] = insert(model, {name: v for name, v in data.items() if name != pk_name})
    else:
        names = tuple(sorted(instance._dirty - {pk_name}))  # type: ignore[attr-defined]
        if names:
            values = {name: data[name] for name in names}
            _write_statement("update", model, names).execute(**values, pk=pk)
    instance._dirty.clear()  # type: ignore[attr-defined]
