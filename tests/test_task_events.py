"""ListTaskEvents, the audit read: who did what to which task and when, page by page."""

from __future__ import annotations

from agenttasks.v1 import tasks_pb2 as pb

from .helpers import raises


def _history(world):
    project = world.project()
    agent, agent_client = world.agent("Auditor")
    task = world.admin.tasks.CreateTask(
        pb.CreateTaskRequest(project_id=project.id, title="Audited")
    ).task
    other = world.admin.tasks.CreateTask(
        pb.CreateTaskRequest(project_id=project.id, title="Other")
    ).task
    agent_client.tasks.ClaimTask(pb.ClaimTaskRequest(task_id=task.id))
    agent_client.tasks.CompleteTask(pb.CompleteTaskRequest(task_id=task.id, result="ok"))
    world.admin.tasks.MoveTask(pb.MoveTaskRequest(task_id=task.id, status=pb.TASK_STATUS_TODO))
    return agent, agent_client, task, other


def _all(client, **filters):
    events, token = [], ""
    while True:
        page = client.tasks.ListTaskEvents(
            pb.ListTaskEventsRequest(page_size=2, page_token=token, **filters)
        )
        events.extend(page.events)
        token = page.next_page_token
        if not token:
            return events


def test_the_team_key_reads_who_did_what_to_which_task_and_when(world):
    agent, _, task, other = _history(world)

    events = _all(world.admin)

    assert [(e.event, e.task.id, e.agent.id) for e in events] == [
        ("task.created", task.id, ""),
        ("task.created", other.id, ""),
        ("task.claimed", task.id, agent.id),
        ("task.completed", task.id, agent.id),
        ("task.moved", task.id, ""),
    ]
    assert [e.agent.name for e in events if e.agent.id] == ["Auditor", "Auditor"]
    ids = [e.event_id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(e.time.ToMicroseconds() > 0 for e in events)
    assert events[3].task.result == "ok" and events[3].task.status == pb.TASK_STATUS_DONE


def test_filters_by_task_and_by_acting_agent(world):
    agent, agent_client, _, other = _history(world)

    assert [e.event for e in _all(world.admin, task_id=other.id)] == ["task.created"]
    by_agent = _all(agent_client, agent_id=agent.id)
    assert [e.event for e in by_agent] == ["task.claimed", "task.completed"]


def test_another_teams_events_are_never_listed(world, other_world):
    _, _, task, _ = _history(world)

    assert _all(other_world.admin) == []
    assert _all(other_world.admin, task_id=task.id) == []


def test_a_token_continues_only_its_own_listing(world):
    _history(world)
    first = world.admin.tasks.ListTaskEvents(pb.ListTaskEventsRequest(page_size=1))
    assert first.next_page_token

    raises(
        "VALIDATION_ERROR",
        world.admin.tasks.ListTaskEvents,
        pb.ListTaskEventsRequest(page_size=1, page_token=first.next_page_token, task_id="cx"),
    )
    raises(
        "VALIDATION_ERROR", world.admin.tasks.ListTaskEvents, pb.ListTaskEventsRequest(page_size=-1)
    )
