"""Server processes for `make bench`: the ceiling (an empty handler) and AgentTasks, seeded.

Each runs in its own process and answers commands from the benchmark over a pipe, so the
load generator never shares an interpreter (or a GIL) with the server it measures.
"""

from __future__ import annotations

import asyncio
import os
from multiprocessing.connection import Connection

import grpc

from agenttasks.server import logs
from agenttasks.server.config import ServerConfig
from agenttasks.server.connections import pool_size
from agenttasks.server.domain import agents, projects, tasks, teams
from agenttasks.server.domain.values import Caller, TokenKind, new_id, now_us
from agenttasks.server.ratelimit import RateLimits
from agenttasks.server.server import _options, create_server
from agenttasks.server.storage import db, migrations
from agenttasks.server.storage.models import Project, Task

CEILING_METHOD = "/bench.Ceiling/Call"
LISTED_TASKS = 60  # ListTasks reads a full page of 50 from these
SEED_CHUNK = 500


def serve_ceiling(conn: Connection) -> None:
    """A grpc.aio server with the same options as ours and one empty, plain async method."""
    asyncio.run(_ceiling(conn))


async def _ceiling(conn: Connection) -> None:
    async def empty(request: bytes, context) -> bytes:
        return b""

    server = grpc.aio.server(options=_options(ServerConfig()))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "bench.Ceiling", {"Call": grpc.unary_unary_rpc_method_handler(empty)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    conn.send({"port": port, "pid": os.getpid()})
    await asyncio.get_running_loop().run_in_executor(None, conn.recv)
    await server.stop(0)


def serve_agenttasks(conn: Connection, url: str, max_workers: int, log_path: str) -> None:
    """Our server on a seeded database; answers ("seed", project, n) until ("stop",).

    It logs every call as `serve` does by default (INFO, text), into `log_path`.
    """
    logs.configure("INFO", stream=open(log_path, "a"))  # noqa: SIM115 (open while serving)
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        rate_limits=RateLimits(0, 0, 0),
        max_workers=max_workers,
        run_workers=False,
    )
    db.open_database(url, pool_size(config, serving=True))
    migrations.migrate()
    server = create_server(config)
    try:
        conn.send({"port": server.port, "pid": os.getpid(), **_seed_world()})
        while (command := conn.recv())[0] != "stop":
            conn.send(_seed_queue(*command[1:]))
    finally:
        server.stop(0)
        db.close()


def _seed_world() -> dict:
    team, key = teams.create_team("bench")
    admin = Caller(team.id, TokenKind.TEAM_API_KEY, None, None)
    agent, token = agents.create_agent(admin, "", "bench-agent", "", "")
    made = {
        name: projects.create_project(admin, "", name, "", "").id
        for name in ("main", "queue", "watch")
    }
    listed = [
        tasks.create_task(admin, "", made["main"], f"task {n}").id for n in range(LISTED_TASKS)
    ]
    return {
        "team_key": key,
        "agent_token": token,
        "agent_id": agent.id,
        "projects": made,
        "task_id": listed[0],
    }


def _seed_queue(project_id: str, count: int) -> list[str]:
    """`count` todo tasks in the project, inserted in bulk (no events: nobody watches it)."""
    team_id = Project.get(Project.id == project_id).team_id
    now = now_us()
    rows = [
        {
            "id": new_id(),
            "team": team_id,
            "project": project_id,
            "title": f"queued {n}",
            "created_at": now + n,
            "updated_at": now + n,
        }
        for n in range(count)
    ]
    with db.database.atomic():
        for start in range(0, count, SEED_CHUNK):
            Task.insert_many(rows[start : start + SEED_CHUNK]).execute()
    return [row["id"] for row in rows]
