"""Replies of overlapping calls leave together; a lone call's leaves on the next turn.

The window is set to an hour here, so a reply that waited for it would never come back
within the test: that is how "at once" is told from "after the window", without timing.
"""

from __future__ import annotations

import asyncio
from concurrent import futures

import pytest

from agenttasks.server.api import replies
from agenttasks.server.api.replies import Replies
from agenttasks.v1 import tasks_pb2


@pytest.fixture
def long_window(monkeypatch):
    monkeypatch.setattr(replies, "REPLY_WINDOW_S", 3600.0)


async def _turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


def test_a_lone_reply_leaves_on_the_next_turn_and_marks_calls_as_not_overlapping(long_window):
    async def scenario():
        gathered = Replies()
        await asyncio.wait_for(gathered.ready(), 5)  # not the hour-long window
        assert gathered.calls_overlap is False
        await asyncio.wait_for(gathered.ready(), 5)
        assert gathered.calls_overlap is False

    asyncio.run(scenario())


def test_replies_ready_in_one_turn_leave_together_and_the_next_batch_waits_the_window(
    long_window,
):
    async def scenario():
        gathered = Replies()
        first = [asyncio.ensure_future(gathered.ready()) for _ in range(3)]
        await asyncio.wait_for(asyncio.gather(*first), 5)
        assert gathered.calls_overlap is True
        # Calls overlap now: the next reply waits for company, up to the window.
        later = asyncio.ensure_future(gathered.ready())
        await _turns(20)
        assert not later.done()
        gathered._batch.end_now()  # what the window's timer does, come early
        await asyncio.wait_for(later, 5)
        assert gathered.calls_overlap is False  # it had no company: back to at once

    asyncio.run(scenario())


def test_a_cancelled_call_does_not_hold_back_or_cancel_the_others(long_window):
    async def scenario():
        gathered = Replies()
        gathered.calls_overlap = True
        waiting = [asyncio.ensure_future(gathered.ready()) for _ in range(3)]
        await _turns(2)
        waiting[0].cancel()
        await _turns(2)
        gathered._batch.end_now()
        await asyncio.wait_for(asyncio.gather(*waiting[1:]), 5)
        assert waiting[0].cancelled()

    asyncio.run(scenario())


def test_overlapping_calls_over_a_channel_each_get_their_own_answer(world):
    """Through the server: replies gathered into batches still reach their own calls."""
    project = world.project()
    made = [
        world.admin.tasks.CreateTask(
            tasks_pb2.CreateTaskRequest(project_id=project.id, title=f"task {n}")
        ).task
        for n in range(40)
    ]

    def get(task_id: str) -> str:
        request = tasks_pb2.GetTaskRequest(task_id=task_id)
        return world.admin.tasks.GetTask(request, timeout=30).task.id

    with futures.ThreadPoolExecutor(16) as pool:
        for _ in range(3):
            answered = list(pool.map(get, [task.id for task in made]))
            assert answered == [task.id for task in made]
