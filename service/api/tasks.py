"""TaskService: requests to domain calls to responses."""

from __future__ import annotations

from agenttasks.v1 import tasks_pb2 as pb
from agenttasks.v1 import tasks_pb2_grpc

from ..auth import current_caller
from ..domain import tasks
from . import convert

WRITABLE = {
    "title": lambda m: {"title": m.title},
    "description": lambda m: {"description": m.description},
    "priority": lambda m: {"priority": m.priority},
    "project_id": lambda m: {"project_id": m.project_id},
    "assigned_agent_id": lambda m: {"assigned_agent_id": m.assigned_agent_id},
    "due_time": lambda m: {"due_time": convert.micros_of(m, "due_time")},
    "max_attempts": lambda m: {"max_attempts": m.max_attempts},
}


class TaskServicer(tasks_pb2_grpc.TaskServiceServicer):
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
