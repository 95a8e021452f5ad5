"""A fresh database of one backend with the models bound to it, for tests that need it alone."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agenttasks.server.storage import db, migrations

from .conftest import POSTGRES_URL, _postgres_database


@contextmanager
def fresh_database(backend: str, tmp_path: Path) -> Iterator[str]:
    """Binds the models to a new, migrated database; the previous binding comes back after.

    For work that sees every row of the database (background jobs), so that rows other
    tests left behind neither take part nor get changed.
    """
    previous = db.database.obj
    if backend == "sqlite":
        urls: Iterator[str] = iter([f"sqlite:///{tmp_path / 'alone.db'}"])
    else:
        urls = _postgres_database(POSTGRES_URL)
    url = next(urls)
    try:
        db.open_database(url)
        migrations.migrate()
        yield url
    finally:
        db.close()
        next(urls, None)
        if previous is not None:
            db.database.initialize(previous)
