"""The event record: payload format 1 as written today equals what migration 2 converted."""

from __future__ import annotations

import json
import re

from agenttasks.server.domain import events
from agenttasks.server.storage.migrations import m002_event_record
from agenttasks.server.storage.models import Task


def _task(**overrides) -> Task:
    fields = {
        "id": "ctask",
        "team": "cteam",
        "project": "cproject",
        "title": "Ünïcode ✓",
        "description": "d",
        "status": "in_progress",
        "priority": 3,
        "assigned_agent": "cagent",
        "result": None,
        "progress": "half",
        "due_time": None,
        "version": 4,
        "lease_expire_at": 1_796_000_000_123_456,
        "lease_us": 2_000_000,
        "attempt_count": 1,
        "max_attempts": 3,
        "created_at": 1,
        "updated_at": 1_796_000_000_000_001,
    }
    return Task(**{**fields, **overrides})


def test_todays_payload_equals_the_migrated_one_for_the_same_task():
    for task in (_task(), _task(status="done", result="ok", assigned_agent=None, due_time=0)):
        written = json.dumps(events.task_view(task), separators=(",", ":"))
        assert written == m002_event_record.payload(dict(task.__data__))


def test_times_are_rfc3339_with_microseconds_and_read_back_exactly():
    earliest, year_385 = -62_135_596_800_000_000, -50_000_000_000_000_000
    for micros in (0, 1, -1, 1_796_000_000_123_456, 253_402_300_799_999_999, earliest, year_385):
        text = events.rfc3339(micros)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", text), text
        assert events.micros_of_rfc3339(text) == micros
    assert events.rfc3339(1_000_000) == "1970-01-01T00:00:01.000000Z"
    assert events.rfc3339(-1) == "1969-12-31T23:59:59.999999Z"
    assert events.rfc3339(earliest) == "0001-01-01T00:00:00.000000Z"  # years padded to four
