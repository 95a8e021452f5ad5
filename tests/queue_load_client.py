"""Holds many parked calls open on one server, cheaply, from one grpc.aio process:

    python tests/queue_load_client.py

reads one JSON line on stdin, `{"target": "127.0.0.1:PORT", "token": ..., "waits": N,
"watches": M}`, opens N ClaimNextTask calls (wait 60 s) and M WatchTasks streams, prints
`ready N M` once the server has them all, and on a `stop` line cancels them and prints
one JSON line: how many calls ended with an error before being cancelled.
"""

from __future__ import annotations

import asyncio
import json
import sys

import grpc

from agenttasks.v1 import tasks_pb2, tasks_pb2_grpc

CALLS_PER_CHANNEL = 100


async def main() -> None:
    order = json.loads(sys.stdin.readline())
    metadata = (("authorization", f"Bearer {order['token']}"),)
    total = order["waits"] + order["watches"]
    channels = [
        grpc.aio.insecure_channel(order["target"]) for _ in range(-(-total // CALLS_PER_CHANNEL))
    ]
    stubs = [tasks_pb2_grpc.TaskServiceStub(channel) for channel in channels]
    failed: list[str] = []
    wait = tasks_pb2.ClaimNextTaskRequest()
    wait.wait.FromSeconds(60)

    async def park(n: int) -> None:
        try:
            await stubs[n % len(stubs)].ClaimNextTask(wait, metadata=metadata, timeout=90)
            failed.append("a wait ended early")
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                failed.append(error.code().name)

    async def watch(n: int) -> None:
        call = stubs[n % len(stubs)].WatchTasks(
            tasks_pb2.WatchTasksRequest(), metadata=metadata, timeout=300
        )
        try:
            async for _ in call:
                pass
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                failed.append(error.code().name)

    calls = [asyncio.create_task(park(n)) for n in range(order["waits"])]
    calls += [asyncio.create_task(watch(n)) for n in range(order["watches"])]
    await asyncio.sleep(order.get("settle", 5))  # every call reaches the server and parks
    print(f"ready {order['waits']} {order['watches']}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for call in calls:
        call.cancel()
    await asyncio.gather(*calls, return_exceptions=True)
    for channel in channels:
        await channel.close()
    print(json.dumps({"failed": failed}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
