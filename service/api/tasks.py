"""TaskService: requests to domain calls to responses."""

from __future__ import annotations

import asyncio
import math

from agenttasks.v1 import tasks_pb2 as pb
from agenttasks.v1 import tasks_pb2_grpc

from ..domain import events, tasks
from ..domain.values import now_us
from ..storage import models
from ..waits import WaitHub
from . import convert
from .door import current_caller

WRITABLE = {
    "title": lambda m: {"title": m.title},
    "description": lambda m: {"description": m.description},
    "priority": lambda m: {"priority": m.priority},
    "project_id": lambda m: {"project_id": m.project_id},
    "assigned_agent_id": lambda m: {"assigned_agent_id": m.assigned_agent_id},
    "due_time": lambda m: {"due_time": convert.micros_of(m, "due_time")},
    "max_attempts": lambda m: {"max_attempts": m.max_attempts},
}


# A watcher reads at most this many events per query; between reads it parks on the hub.
WATCH_BATCH = 100
# A parked watcher re-reads this often even without a wake-up (a missed poll costs no more).
WATCH_IDLE_SECONDS = 15.0
# A claim waiter wakes when the team's next lease runs out, but never sooner than this.
LEASE_SLACK = 0.1


class TaskServicer(tasks_pb2_grpc.TaskServiceServicer):
    """Unary methods run on the database pool; ClaimNextTask and WatchTasks wait on the loop."""

    def __init__(self, hub: WaitHub) -> None:
        self._hub = hub

    def ListTasks(self, request, context):
        where = tasks.TaskFilter(
            status=convert.task_status(request.status),
            project_id=request.project_id or None,
            agent_id=request.agent_id or None,
            priority=convert.task_priority(request.priority),
        )
        rows, next_page = tasks.list_tasks(
            current_caller(), request.team_id, where, request.page_size, request.page_token
        )
        return pb.ListTasksResponse(
            tasks=[convert.task(row) for row in rows], next_page_token=next_page
        )

    def GetTask(self, request, context):
        task = tasks.get_task(current_caller(), request.task_id)
        return pb.GetTaskResponse(task=convert.task(task))

    def CreateTask(self, request, context):
        task = tasks.create_task(
            current_caller(),
            request.team_id,
            project_id=request.project_id,
            title=request.title,
            description=request.description,
            assigned_agent_id=request.assigned_agent_id,
            priority=request.priority,
            due_time=convert.micros_of(request, "due_time"),
            max_attempts=request.max_attempts,
            request_id=request.request_id,
        )
        return pb.CreateTaskResponse(task=convert.task(task))

    def UpdateTask(self, request, context):
        changes = convert.changes_from(request.task, request.update_mask, WRITABLE)
        task = tasks.update_task(current_caller(), request.task.id, changes, request.task.etag)
        return pb.UpdateTaskResponse(task=convert.task(task))

    def ClaimTask(self, request, context):
        task = tasks.claim_task(
            current_caller(),
            request.task_id,
            request.agent_id,
            convert.micros_of(request, "lease_duration"),
        )
        return pb.ClaimTaskResponse(task=convert.task(task))

    def CompleteTask(self, request, context):
        task = tasks.complete_task(
            current_caller(), request.task_id, request.result, request.request_id
        )
        return pb.CompleteTaskResponse(task=convert.task(task))

    def MoveTask(self, request, context):
        status = convert.task_status(request.status) or ""
        task = tasks.move_task(current_caller(), request.task_id, status, request.etag)
        return pb.MoveTaskResponse(task=convert.task(task))

    def HeartbeatTask(self, request, context):
        task = tasks.heartbeat_task(
            current_caller(),
            request.task_id,
            convert.micros_of(request, "lease_duration"),
            request.progress,
        )
        return pb.HeartbeatTaskResponse(task=convert.task(task))

    def ListTaskEvents(self, request, context):
        rows, next_page = events.list_events(
            current_caller(),
            request.team_id,
            request.task_id,
            request.agent_id,
            request.page_size,
            request.page_token,
        )
        return pb.ListTaskEventsResponse(
            events=[convert.task_event(row) for row in rows], next_page_token=next_page
        )

    async def ClaimNextTask(self, request, context):
        caller = current_caller()
        wait_us = convert.micros_of(request, "wait")

        def attempt() -> tuple[int, models.Task | None, int | None]:
            seen = events.last_event_id(caller.team_id)  # before the attempt: no wake is lost
            task = tasks.claim_next_task(
                caller,
                request.agent_id,
                project_id=request.project_id,
                priority=convert.task_priority(request.priority) or 0,
                lease_us=convert.micros_of(request, "lease_duration"),
                wait_us=wait_us,
            )
            lease_end = tasks.next_lease_end(caller.team_id) if task is None and wait_us else None
            return seen, task, lease_end

        loop = asyncio.get_running_loop()
        deadline = loop.time() + min((wait_us or 0) / 1e6, context.time_remaining() or math.inf)
        while True:
            seen, task, lease_end = await self._hub.run(attempt)
            if task is not None:
                return pb.ClaimNextTaskResponse(task=convert.task(task))
            if loop.time() >= deadline:
                return pb.ClaimNextTaskResponse()
            timeout = deadline - loop.time()
            if lease_end is not None:  # a lease running out makes a task claimable: no event
                timeout = min(timeout, max(LEASE_SLACK, (lease_end - now_us()) / 1e6))
            await self._hub.wait(caller.team_id, seen, timeout)

    async def WatchTasks(self, request, context):
        caller = current_caller()
        team_id = caller.team_id
        where = {
            "project_id": request.project_id or None,
            "status": convert.task_status(request.status),
            "assigned_agent_id": request.agent_id or None,
            "priority": convert.task_priority(request.priority),
        }

        def read(cursor: int, replaying: bool) -> tuple[int, list[events.Event]]:
            newest = events.last_event_id(team_id)  # first: every event up to it is committed
            batch = events.events_after(team_id, cursor, WATCH_BATCH, **where)
            if replaying:  # after the read: retention took nothing it should have returned
                events.check_resumable(team_id, cursor)
            return newest, batch

        cursor = request.after_event_id
        # Only a client's resume point can fall behind retention; a live cursor keeps up.
        replaying = cursor > 0
        if not replaying:
            cursor = await self._hub.run(events.last_event_id, team_id)
        while True:
            newest, batch = await self._hub.run(read, cursor, replaying)
            for event in batch:
                yield convert.watch_event(event)
            if len(batch) == WATCH_BATCH:
                cursor = batch[-1].event_id
                continue
            replaying = False
            # Events up to `newest` that did not match the filters are passed over too.
            cursor = max(newest, batch[-1].event_id if batch else cursor)
            await self._hub.wait(team_id, cursor, WATCH_IDLE_SECONDS)
