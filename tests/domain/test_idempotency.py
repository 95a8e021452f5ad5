"""request_id without gRPC: concurrent first calls still create exactly one resource."""

from __future__ import annotations

import threading

from agenttasks.server.domain import projects, teams
from agenttasks.server.domain.values import Caller, TokenKind


def test_concurrent_retries_create_one_project(database_url):
    team, _ = teams.create_team("Idempotent")
    caller = Caller(team.id, TokenKind.TEAM_API_KEY)
    barrier = threading.Barrier(8)
    made: list[str] = []

    def create() -> None:
        barrier.wait()
        project = projects.create_project(caller, "", "Once", "", "same-request")
        made.append(project.id)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 8 and len(set(made)) == 1
    listed, _ = projects.list_projects(caller, "", 100, "")
    assert [p.id for p in listed] == made[:1]


def test_the_same_request_id_in_another_team_is_another_request(database_url):
    first, _ = teams.create_team("A")
    second, _ = teams.create_team("B")
    a = projects.create_project(Caller(first.id, TokenKind.TEAM_API_KEY), "", "P", "", "r1")
    b = projects.create_project(Caller(second.id, TokenKind.TEAM_API_KEY), "", "P", "", "r1")
    assert a.id != b.id
