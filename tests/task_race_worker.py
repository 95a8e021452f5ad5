"""Runs task calls for several tokens at once, one thread per token, over real channels.

The race tests use it in two ways: imported, from threads of the test process, and as a
separate client process, so that claims arrive from different processes at the same time:

    python tests/task_race_worker.py

reads one JSON line on stdin, `{"target": "127.0.0.1:PORT", "tokens": [...], "jobs":
[[token_index, action, task_id, {arguments}], ...]}`, opens its channels, prints `ready`,
waits for a `go` line, runs the jobs and prints one JSON line: the outcome of every job,
in job order. Tokens come on stdin, never on the command line, so no process listing
shows them.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import defaultdict
from typing import Any

import grpc
from grpc_status import rpc_status

from agenttasks.v1 import errors_pb2, tasks_pb2, tasks_pb2_grpc

Job = tuple[int, str, str, dict[str, Any]]


def _request(action: str, task_id: str, arguments: dict[str, Any]):
    if action == "create":  # `task_id` is unused: the task does not exist yet
        return "CreateTask", tasks_pb2.CreateTaskRequest(**arguments)
    if action == "claim":
        return "ClaimTask", tasks_pb2.ClaimTaskRequest(task_id=task_id, **arguments)
    if action == "complete":
        return "CompleteTask", tasks_pb2.CompleteTaskRequest(task_id=task_id, **arguments)
    if action == "move":
        return "MoveTask", tasks_pb2.MoveTaskRequest(task_id=task_id, **arguments)
    raise ValueError(f"unknown action {action!r}")


def _error_code(error: grpc.RpcError) -> str:
    """The documented `code` of a failed call (from its ErrorDetail), e.g. TASK_ALREADY_CLAIMED."""
    status = rpc_status.from_call(error)
    if status is not None:
        for packed in status.details:
            detail = errors_pb2.ErrorDetail()
            if packed.Unpack(detail):
                return detail.code
    return f"grpc:{error.code().name}"


def _task_summary(task: tasks_pb2.Task) -> dict[str, Any]:
    return {
        "id": task.id,
        "status": tasks_pb2.TaskStatus.Name(task.status),
        "assigned_agent_id": task.assigned_agent_id,
        "result": task.result,
        "etag": task.etag,
    }


class Runner:
    """One channel per token (each a separate connection), ready before the start signal."""

    def __init__(self, target: str, tokens: list[str]) -> None:
        self.channels = [grpc.insecure_channel(target) for _ in tokens]
        self.stubs = [tasks_pb2_grpc.TaskServiceStub(channel) for channel in self.channels]
        self.tokens = tokens
        for channel in self.channels:
            grpc.channel_ready_future(channel).result(timeout=30)

    def run(self, jobs: list[Job], start: threading.Event | None = None) -> list[dict[str, Any]]:
        """Runs every token's jobs in its own thread (in job order); returns all outcomes."""
        by_token: dict[int, list[int]] = defaultdict(list)
        for number, (token_index, *_rest) in enumerate(jobs):
            by_token[token_index].append(number)
        outcomes: list[dict[str, Any]] = [{} for _ in jobs]

        def work(token_index: int, numbers: list[int]) -> None:
            stub = self.stubs[token_index]
            metadata = [("authorization", f"Bearer {self.tokens[token_index]}")]
            if start is not None:
                start.wait()
            for number in numbers:
                _, action, task_id, arguments = jobs[number]
                method, request = _request(action, task_id, arguments)
                try:
                    response = getattr(stub, method)(request, metadata=metadata, timeout=60)
                    outcomes[number] = {"outcome": "OK", "task": _task_summary(response.task)}
                except grpc.RpcError as error:
                    outcomes[number] = {"outcome": _error_code(error)}

        threads = [
            threading.Thread(target=work, args=(token_index, numbers), daemon=True)
            for token_index, numbers in by_token.items()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return outcomes

    def close(self) -> None:
        for channel in self.channels:
            channel.close()


def main() -> None:
    plan = json.loads(sys.stdin.readline())
    runner = Runner(plan["target"], plan["tokens"])
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("expected 'go'")
    jobs = [(int(t), str(a), str(task), dict(args)) for t, a, task, args in plan["jobs"]]
    outcomes = runner.run(jobs)
    runner.close()
    print(json.dumps(outcomes), flush=True)


if __name__ == "__main__":
    main()
