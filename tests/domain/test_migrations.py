"""Migrations without gRPC: numbered, applied once each, safe to run concurrently, lossless."""

from __future__ import annotations

import threading

import peewee as pw
import pytest

from agenttasks.server.domain import teams
from agenttasks.server.storage import migrations
from agenttasks.server.storage.db import database
from agenttasks.server.storage.models import SchemaMigration, Team


class Probe(pw.Model):
    note = pw.CharField()

    class Meta:
        database = database
        table_name = "migration_probe"


def test_a_new_migration_is_applied_once_even_by_concurrent_processes(database_url, monkeypatch):
    team, _ = teams.create_team("Before the upgrade")
    applied: list[int] = []

    def add_probe_table() -> None:
        applied.append(1)
        database.create_tables([Probe])
        Probe.create(note="written by migration 99")

    monkeypatch.setattr(
        migrations, "MIGRATIONS", [*migrations.MIGRATIONS, (99, "probe table", add_probe_table)]
    )
    try:
        results: list[list[int]] = []
        threads = [
            threading.Thread(target=lambda: results.append(migrations.migrate())) for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == [[], [], [], [99]]
        assert applied == [1]
        assert migrations.current_version() == 99
        assert migrations.migrate() == []
        # The data that was there survives the upgrade.
        assert Team.get(Team.id == team.id).name == "Before the upgrade"
        assert [p.note for p in Probe.select()] == ["written by migration 99"]
    finally:
        database.drop_tables([Probe])
        SchemaMigration.delete().where(SchemaMigration.version == 99).execute()


def test_a_database_ahead_of_the_code_is_refused_and_left_as_it_is(database_url, monkeypatch):
    version = migrations.current_version()
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:1])

    with pytest.raises(migrations.SchemaTooNew) as refused:
        migrations.migrate()

    assert (refused.value.database_version, refused.value.known_version) == (version, 1)
    assert "upgrade agenttasks" in str(refused.value)
    assert migrations.current_version() == version
