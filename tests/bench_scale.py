"""`make bench-scale`: per-call latency on 1,000 and on 1,000,000 tasks, and `serve --workers`.

Part one seeds a database per size and backend (set-based SQL, then ANALYZE), serves each
from its own process, and times the same calls one at a time over a real channel: GetTask,
ListTasks with each filter (first page, and a page half-way through with the page token),
ClaimNextTask (no wait) and CreateTask. The sizes of one backend are measured by turns,
a batch of calls each, so a busy moment on a shared machine hits all of them: the ratio
of the largest size to the smallest is the figure to read. Part two (bench_workers)
compares calls/s of `agenttasks serve --workers 1` and `--workers 2` on PostgreSQL.
Writes build/bench-scale.json.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import grpc

from agenttasks.v1 import tasks_pb2, tasks_pb2_grpc

from . import bench_workers
from .bench import _postgres_database, write_report
from .bench_scale_servers import FILTERS, HIGH, serve_seeded

REPORT = Path("build/bench-scale.json")
WARMUP = 10  # calls per call and size before the measured ones
ROUNDS = 10  # turns between the sizes
CALL_SECONDS = 20.0  # a call slower than this per size gets fewer samples
ACCEPTANCE = 2.0  # ListTasks and ClaimNextTask stay within this ratio
_spawn = multiprocessing.get_context("spawn")
_STATUS = {
    "todo": tasks_pb2.TASK_STATUS_TODO,
    "in_progress": tasks_pb2.TASK_STATUS_IN_PROGRESS,
    "done": tasks_pb2.TASK_STATUS_DONE,
    "cancelled": tasks_pb2.TASK_STATUS_CANCELLED,
}


def size_label(size: int) -> str:
    for unit, name in ((1_000_000, "M"), (1_000, "k")):
        if size >= unit and size % unit == 0:
            return f"{size // unit}{name}"
    return str(size)


def parse_size(text: str) -> int:
    text = text.strip().lower().replace("_", "").replace(",", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    value = int(text[:-1] if scale > 1 else text) * scale
    if value < 1:
        raise argparse.ArgumentTypeError("a size is at least 1 task")
    return value


class Seeded:
    """One server process on a database seeded with `size` tasks (started at once)."""

    def __init__(self, url: str, size: int, page_size: int) -> None:
        self.size = size
        self.conn, theirs = _spawn.Pipe()
        self.process = _spawn.Process(
            target=serve_seeded, args=(theirs, url, size, page_size), daemon=True
        )
        self.process.start()
        self.info: dict[str, Any] = {}

    def ready(self) -> dict[str, Any]:
        if not self.info:
            self.info = self.conn.recv()
        return self.info

    def ask(self, *command: Any) -> Any:
        self.conn.send(command)
        return self.conn.recv()

    def stop(self) -> None:
        if self.process.is_alive():
            with suppress(OSError):
                self.conn.send(("stop",))
            self.process.join(30)
        if self.process.is_alive():
            self.process.kill()


def _calls(channel: grpc.Channel, info: dict[str, Any], page_size: int) -> dict[str, Callable]:
    """Each measured call, by name, against one seeded server."""
    world = info["world"]
    stub = tasks_pb2_grpc.TaskServiceStub(channel)
    key = (("authorization", f"Bearer {world['team_key']}"),)
    agent = (("authorization", f"Bearer {world['agent_token']}"),)
    calls: dict[str, Callable] = {}
    get = tasks_pb2.GetTaskRequest(task_id=info["task_id"])
    calls["GetTask"] = lambda: stub.GetTask(get, metadata=key)
    for name in FILTERS:
        fields: dict[str, Any] = {"page_size": page_size}
        if name in _STATUS:
            fields["status"] = _STATUS[name]
        elif name == "project":
            fields["project_id"] = world["project_ids"][0]
        elif name == "agent":
            fields["agent_id"] = world["agent_id"]
        elif name == "priority":
            fields["priority"] = HIGH
        first = tasks_pb2.ListTasksRequest(**fields)
        later = tasks_pb2.ListTasksRequest(**fields, page_token=info["tokens"][name])
        calls[f"ListTasks {name}"] = _listing(stub, first, key)
        calls[f"ListTasks {name}, later page"] = _listing(stub, later, key)
    claim = tasks_pb2.ClaimNextTaskRequest()
    calls["ClaimNextTask"] = lambda: _claimed(stub.ClaimNextTask(claim, metadata=agent))
    create = tasks_pb2.CreateTaskRequest(project_id=world["project_ids"][0], title="bench")
    calls["CreateTask"] = lambda: stub.CreateTask(create, metadata=key)
    return calls


def _listing(stub, request, metadata) -> Callable[[], int]:
    return lambda: len(stub.ListTasks(request, metadata=metadata).tasks)


def _claimed(response) -> int:
    if not response.HasField("task"):
        raise RuntimeError("ClaimNextTask found no task: the queue ran out")
    return 1


def _timed(call: Callable[[], Any], count: int, deadline: float) -> tuple[list[float], Any]:
    samples, answer = [], None
    for _ in range(count):
        started = time.perf_counter()
        answer = call()
        samples.append(time.perf_counter() - started)
        if started > deadline:
            break
    return samples, answer


def measure(servers: list[Seeded], page_size: int, repeat: int) -> dict[str, Any]:
    """p50 and p99 of each call on each server, measured by turns; see the module doc."""
    with ExitStack() as stack:
        calls = []
        for server in servers:
            channel = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{server.info['port']}"))
            calls.append(_calls(channel, server.info, page_size))
        # Enough todo tasks for every claim of the run on the smallest queue too.
        for server in servers:
            server.ask("queue", repeat + WARMUP + ROUNDS)
        results: dict[str, Any] = {}
        for name in calls[0]:
            samples: list[list[float]] = [[] for _ in servers]
            answers: list[Any] = [None for _ in servers]
            deadlines = [time.perf_counter() + CALL_SECONDS for _ in servers]
            for index in range(len(servers)):
                _timed(calls[index][name], WARMUP, deadlines[index])
            batch = max(1, repeat // ROUNDS)
            for round_number in range(ROUNDS):
                turn = range(len(servers))
                for index in turn if round_number % 2 == 0 else reversed(turn):
                    seen, answers[index] = _timed(calls[index][name], batch, deadlines[index])
                    samples[index].extend(seen)
            results[name] = {
                str(server.size): _stats(seen, answer)
                for server, seen, answer in zip(servers, samples, answers, strict=True)
            }
            print(f"  {name:36} " + _row(results[name], servers), flush=True)
        return results


def _stats(samples: list[float], answer: Any) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "p50_ms": statistics.median(ordered) * 1e3,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
        "calls": len(ordered),
        "rows": answer if isinstance(answer, int) else None,
    }


def _ratio(result: dict[str, Any], servers: list[Seeded]) -> float:
    return result[str(servers[-1].size)]["p50_ms"] / result[str(servers[0].size)]["p50_ms"]


def _row(result: dict[str, Any], servers: list[Seeded]) -> str:
    cells = [
        f"{result[str(s.size)]['p50_ms']:7.2f} ({result[str(s.size)]['p99_ms']:7.2f})"
        for s in servers
    ]
    return "  ".join(cells) + f"  {_ratio(result, servers):5.2f}×"


def print_table(report: dict[str, Any], sizes: list[int]) -> None:
    """Per call and backend: p50 (p99) in ms at the smallest and largest size, and the ratio
    of their p50s; "over" marks the calls the issue holds to 2× that are beyond it."""
    backends = report["backends"]
    if not backends:
        return
    first, last = str(sizes[0]), str(sizes[-1])
    small, large = size_label(sizes[0]), size_label(sizes[-1])
    print(f"\nms per call, p50 (p99), one call at a time; ratio: {large} p50 / {small} p50")
    header = "".join(
        f"  {backend + ' ' + small:>17} {backend + ' ' + large:>17} {'ratio':>8}     "
        for backend in backends
    )
    print(f"  {'call':34}{header}".rstrip())
    for name in next(iter(backends.values()))["calls"]:
        line = f"  {name:34}"
        for found in backends.values():
            result = found["calls"][name]
            ratio = result[last]["p50_ms"] / result[first]["p50_ms"]
            checked = name.startswith(("ListTasks", "ClaimNextTask"))
            flag = " over" if checked and ratio > ACCEPTANCE else ""
            line += f"  {_cell(result[first]):>17} {_cell(result[last]):>17} {ratio:7.2f}×{flag:5}"
        print(line.rstrip())


def _cell(result: dict[str, Any]) -> str:
    return f"{result['p50_ms']:.2f} ({result['p99_ms']:.1f})"


def start_servers(
    url_of: Callable[[int], str], args: argparse.Namespace, stack: ExitStack
) -> list[Seeded]:
    """Starts the servers of one backend (they seed at once, in parallel)."""
    servers = [Seeded(url_of(size), size, args.page_size) for size in args.tasks]
    for server in servers:
        stack.callback(server.stop)
    return servers


@contextmanager
def _databases(args: argparse.Namespace, folder: str) -> Iterator[dict[str, Callable | None]]:
    """A URL maker per backend: a new database for each size (None: backend skipped)."""
    made: list[Iterator[str | None]] = []

    def postgres(size: int) -> str:
        databases = _postgres_database(args.postgres, f"_{size}")
        made.append(databases)
        url = next(databases)
        assert url is not None
        return url

    def sqlite(size: int) -> str:
        return f"sqlite:///{folder}/scale-{size}.db"

    backends: dict[str, Callable | None] = {"sqlite": sqlite, "postgres": postgres}
    if args.only != "sqlite" and not _postgres_answers(args.postgres):
        backends["postgres"] = None
    try:
        yield {name: maker for name, maker in backends.items() if args.only in (None, name)}
    finally:
        for databases in made:
            next(databases, None)


def _postgres_answers(url: str) -> bool:
    import psycopg2

    try:
        psycopg2.connect(url, connect_timeout=3).close()
    except psycopg2.OperationalError:
        return False
    return True


def sizes_part(args: argparse.Namespace, report: dict[str, Any]) -> None:
    with (
        tempfile.TemporaryDirectory() as folder,
        _databases(args, folder) as backends,
        ExitStack() as stack,
    ):
        running: dict[str, list[Seeded]] = {}
        for backend, url_of in backends.items():
            if url_of is None:
                print(f"\n{backend}: skipped (no PostgreSQL server at the given URL)")
                continue
            running[backend] = start_servers(url_of, args, stack)
        sizes = ", ".join(size_label(s) for s in args.tasks)
        print(f"seeding {sizes} tasks on {', '.join(running)} (in parallel)", flush=True)
        for backend, servers in running.items():
            for server in servers:
                info = server.ready()
                print(
                    f"  {backend} {size_label(server.size)}: {info['seed_seconds']:.1f} s",
                    flush=True,
                )
        for backend, servers in running.items():
            print(f"\n{backend}: {args.repeat} calls each, by turns", flush=True)
            results = measure(servers, args.page_size, args.repeat)
            plans = {str(s.size): s.ask("plans") for s in servers}
            report["backends"][backend] = {
                "seed_seconds": {str(s.size): s.info["seed_seconds"] for s in servers},
                "calls": results,
                "plans": plans,
            }
            if args.plans:
                _print_plans(plans)


def _print_plans(plans: dict[str, dict[str, str]]) -> None:
    for size, found in plans.items():
        for name, text in found.items():
            print(f"\n  [{size_label(int(size))}] {name}")
            print("    " + text.replace("\n", "\n    "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--tasks",
        nargs="+",
        type=parse_size,
        default=[1_000, 1_000_000],
        help="sizes to compare, smallest first (1000, 10k, 1M...; default 1k 1M)",
    )
    parser.add_argument("--repeat", type=int, default=300, help="calls per call and size")
    parser.add_argument("--page-size", type=int, default=20, help="ListTasks' page_size")
    parser.add_argument("--only", choices=["sqlite", "postgres"], help="one backend")
    parser.add_argument(
        "--part", choices=["sizes", "workers"], help="only this part (default: both)"
    )
    parser.add_argument("--plans", action="store_true", help="print each statement's plan per size")
    bench_workers.add_arguments(parser)
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "AGENTTASKS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
    args.tasks = sorted(set(args.tasks))
    started = time.monotonic()
    report: dict[str, Any] = {"settings": vars(args), "cpus": os.cpu_count(), "backends": {}}
    if args.part in (None, "sizes"):
        sizes_part(args, report)
        print_table(report, args.tasks)
    if args.part in (None, "workers"):
        report["workers"] = bench_workers.run(args)
    write_report(REPORT, report, started)


if __name__ == "__main__":
    main()
