"""The hosted product's quickstart agent loop, written as a user would with the Python stubs:
plain channels, generated stubs, the token in `authorization` metadata."""

from __future__ import annotations

import grpc

from agenttasks.v1 import tasks_pb2, tasks_pb2_grpc

from .helpers import raises


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def test_the_quickstart_agent_loop_works_end_to_end(world, server):
    project = world.project("Quickstart")
    _, worker = world.agent("worker-1")
    _, rival = world.agent("worker-2")
    # A person (holding the Team API Key) files the work.
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        tasks = tasks_pb2_grpc.TaskServiceStub(channel)
        filed = tasks.CreateTask(
            tasks_pb2.CreateTaskRequest(
                project_id=project.id,
                title="Summarise the support tickets",
                description="Last week's tickets, grouped by product area",
            ),
            metadata=bearer(world.key),
        ).task

        # 1. The agent looks for work.
        todo = tasks.ListTasks(
            tasks_pb2.ListTasksRequest(status=tasks_pb2.TASK_STATUS_TODO),
            metadata=bearer(worker.token),
        ).tasks
        assert [task.id for task in todo] == [filed.id]

        # 2. It claims the first task; another agent is too late.
        claimed = tasks.ClaimTask(
            tasks_pb2.ClaimTaskRequest(task_id=todo[0].id), metadata=bearer(worker.token)
        ).task
        assert claimed.status == tasks_pb2.TASK_STATUS_IN_PROGRESS
        raises(
            "TASK_ALREADY_CLAIMED",
            tasks.ClaimTask,
            tasks_pb2.ClaimTaskRequest(task_id=claimed.id),
            metadata=bearer(rival.token),
            message="Task is already claimed by another agent",
        )
        # Nor may the other agent report a result for it.
        raises(
            "NOT_ASSIGNED_AGENT",
            tasks.CompleteTask,
            tasks_pb2.CompleteTaskRequest(task_id=claimed.id, result="not mine"),
            metadata=bearer(rival.token),
            message="Task is assigned to another agent",
        )

        # 3. It does the work and reports the result.
        result = "Billing: 12 tickets, mostly refunds. Login: 5 tickets, SSO timeouts."
        done = tasks.CompleteTask(
            tasks_pb2.CompleteTaskRequest(task_id=claimed.id, result=result),
            metadata=bearer(worker.token),
        ).task
        assert (done.status, done.result) == (tasks_pb2.TASK_STATUS_DONE, result)

        # 4. Whoever looks at the board sees the task done, with the result.
        shown = tasks.GetTask(
            tasks_pb2.GetTaskRequest(task_id=filed.id), metadata=bearer(world.key)
        ).task
        assert shown.status == tasks_pb2.TASK_STATUS_DONE
        assert shown.result == result
        assert shown.assigned_agent_id == claimed.assigned_agent_id
        left = tasks.ListTasks(
            tasks_pb2.ListTasksRequest(status=tasks_pb2.TASK_STATUS_TODO),
            metadata=bearer(worker.token),
        ).tasks
        assert list(left) == []
