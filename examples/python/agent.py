"""An AgentTasks agent: registers with a Team API Key, then claims and completes todo tasks.

    AGENTTASKS_TEAM_KEY=tk_... python agent.py --target localhost:50051 --name py-agent

Needs only the client: `pip install agenttasks-grpc`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import TypeVar

from agenttasks.client import AgentTasksError, connect
from agenttasks.v1 import agents_pb2, tasks_pb2

R = TypeVar("R")
GONE = {"TASK_ALREADY_CLAIMED", "TASK_NOT_CLAIMABLE"}  # another agent was faster


def patiently(call: Callable[[], R]) -> R:
    """`call()`, sleeping out RATE_LIMITED answers for as long as the server asks."""
    while True:
        try:
            return call()
        except AgentTasksError as error:
            if error.code != "RATE_LIMITED":
                raise
            delay = error.retry_delay or 1.0
            print(f"rate limited: retrying in {delay:.1f} s")
            time.sleep(delay)


def work(task: tasks_pb2.Task, name: str) -> str:
    """The agent's "work": a real agent would call a model or a tool here."""
    return f"{name}: {task.title[::-1]}"


def run(target: str, team_key: str, name: str, max_tasks: int) -> int:
    with connect(target, team_key) as team:
        created = patiently(
            lambda: team.agents.CreateAgent(agents_pb2.CreateAgentRequest(name=name))
        )
    print(f"registered agent {created.agent.id} ({name})")
    done = 0
    with connect(target, created.token) as agent:
        todo = tasks_pb2.ListTasksRequest(status=tasks_pb2.TASK_STATUS_TODO, page_size=10)
        while tasks := patiently(lambda: agent.tasks.ListTasks(todo)).tasks:
            for task in tasks:
                try:
                    patiently(
                        lambda t=task: agent.tasks.ClaimTask(
                            tasks_pb2.ClaimTaskRequest(task_id=t.id)
                        )
                    )
                except AgentTasksError as error:
                    if error.code in GONE:
                        continue
                    raise
                result = work(task, name)
                patiently(
                    lambda t=task, r=result: agent.tasks.CompleteTask(
                        tasks_pb2.CompleteTaskRequest(task_id=t.id, result=r)
                    )
                )
                done += 1
                print(f"completed {task.id}")
                if max_tasks and done >= max_tasks:
                    return done
    print(f"no todo tasks left; completed {done}")
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="localhost:50051", help="server host:port")
    parser.add_argument("--name", default="py-agent", help="the agent's name")
    parser.add_argument("--max-tasks", type=int, default=0, help="stop after N tasks (0: none)")
    args = parser.parse_args()
    key = os.environ.get("AGENTTASKS_TEAM_KEY")
    if not key:
        parser.error("set AGENTTASKS_TEAM_KEY to a Team API Key")
    try:
        run(args.target, key, args.name, args.max_tasks)
    except AgentTasksError as error:
        print(f"agent: {error.code}: {error.error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
