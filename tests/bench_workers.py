"""`make bench-scale`, part two: calls/s of `agenttasks serve --workers 1` against `--workers 2`.

The real CLI in subprocesses, on one fresh PostgreSQL database whose team comes from
`agenttasks team create`; serving only (`--no-workers`), rate limits off, warnings only.
Both servers run at once and are measured by turns, so a busy moment on a shared machine
hits both; the ratio is the median of each round's pair. The load generators (bench_load)
are several processes with several connections each: the kernel (SO_REUSEPORT) spreads
connections over a server's processes, not calls, and each process's metrics port tells
how the calls were shared.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agenttasks.v1 import agents_pb2, projects_pb2, tasks_pb2

from .bench import Bench, _postgres_database
from .bench_load import Job
from .helpers import Client

SCENARIOS = ("GetTask", "CreateTask")
LOGS = Path("build")  # each server's output: serve-workers-N.log
_SCRIPT = Path(sys.executable).parent / "agenttasks"
AGENTTASKS = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "agenttasks.server.cli"]
START_SECONDS = 60
_HANDLED = re.compile(r"^grpc_server_handled_total\{([^}]*)\} ([0-9.e+]+)$", re.MULTILINE)
_spawn = multiprocessing.get_context("spawn")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("serve --workers (part two, PostgreSQL)")
    group.add_argument(
        "--workers", nargs="+", type=int, default=[1, 2], help="server processes to compare"
    )
    group.add_argument(
        "--clients",
        type=int,
        help="load generator processes (default and at least: the most --workers)",
    )
    group.add_argument("--channels", type=int, default=16, help="connections per client process")
    group.add_argument("--concurrency", type=int, default=64, help="calls in flight")
    group.add_argument("--duration", type=float, default=2.0, help="seconds measured")
    group.add_argument("--warmup", type=float, default=0.5, help="seconds not measured")
    group.add_argument("--rounds", type=int, default=5)
    group.add_argument(
        "--max-workers",
        type=int,
        default=16,
        help="threads (and PostgreSQL connections) per server process: both servers fit in "
        "PostgreSQL's default 100 connections beside other clients",
    )


def _env() -> dict[str, str]:
    """Without AGENTTASKS_* settings: only the flags given count."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AGENTTASKS_")}


def _free_ports(count: int) -> int:
    """The first of `count` consecutive free ports (metrics: one per process)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + count > 65535:
            continue
        try:
            for port in range(first, first + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError("no free ports")


class Served:
    """`agenttasks serve --workers N` on `url`, with each process's metrics port."""

    def __init__(self, url: str, workers: int, max_workers: int) -> None:
        self.workers = workers
        self.port = _free_ports(1)
        self.metrics = _free_ports(workers)
        self.log = LOGS / f"serve-workers-{workers}.log"
        command = [
            *AGENTTASKS,
            "serve",
            "--db",
            url,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(workers),
            "--max-workers",
            str(max_workers),
            "--no-workers",
            "--metrics-port",
            str(self.metrics),
            "--log-level",
            "WARNING",
            *("--rate-limit-task", "0", "--rate-limit-other", "0"),
            *("--rate-limit-auth-failures", "0"),
        ]
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=_env()
            )

    def wait_serving(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"serve exited: {self.log.read_text()}")
                try:
                    answer = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    time.sleep(0.1)
            else:
                raise RuntimeError(f"serve did not come up: {self.log.read_text()}")
        # Every process serves once its metrics answer.
        while time.monotonic() < deadline and None in self.handled("GetTask"):
            time.sleep(0.1)

    def handled(self, method: str) -> list[float | None]:
        """Calls of `method` each process has answered so far (None: not up yet)."""
        counts: list[float | None] = []
        for index in range(self.workers):
            try:
                url = f"http://127.0.0.1:{self.metrics + index}/metrics"
                with urllib.request.urlopen(url, timeout=5) as response:
                    text = response.read().decode()
            except OSError:
                counts.append(None)
                continue
            counts.append(
                sum(
                    float(value)
                    for labels, value in _HANDLED.findall(text)
                    if f'grpc_method="{method}"' in labels
                )
            )
        return counts

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _team_key(url: str) -> str:
    done = subprocess.run(
        [*AGENTTASKS, "team", "create", "--name", "bench", "--json", "--db", url],
        capture_output=True,
        text=True,
        env=_env(),
        check=True,
    )
    return json.loads(done.stdout)["apiKey"]


def _world(port: int, key: str) -> dict[str, Any]:
    """What bench_load's GetTask and CreateTask need, made through the API."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        admin = Client(channel, key)
        project = admin.projects.CreateProject(projects_pb2.CreateProjectRequest(name="main"))
        agent = admin.agents.CreateAgent(agents_pb2.CreateAgentRequest(name="bench-agent"))
        task = admin.tasks.CreateTask(
            tasks_pb2.CreateTaskRequest(project_id=project.project.id, title="read me")
        )
    return {
        "team_key": key,
        "agent_token": agent.token,
        "projects": {"main": project.project.id, "queue": project.project.id},
        "task_id": task.task.id,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    databases = _postgres_database(args.postgres, "_workers")
    url = next(databases)
    if url is None:
        print("\nserve --workers: skipped (no PostgreSQL server at the given URL)")
        return {}
    clients = max(args.clients or 0, *args.workers)
    try:
        key = _team_key(url)
        LOGS.mkdir(parents=True, exist_ok=True)
        with ExitStack() as stack:
            served = {n: Served(url, n, args.max_workers) for n in args.workers}
            for server in served.values():
                stack.callback(server.stop)
            for server in served.values():
                server.wait_serving()
            world = _world(served[args.workers[0]].port, key)
            print(
                f"\nserve --workers {' and '.join(map(str, args.workers))} on PostgreSQL:"
                f" {args.max_workers} threads per process,"
                f" {clients} client processes × {args.channels} connections,"
                f" {args.concurrency} calls in flight, {args.rounds} rounds",
                flush=True,
            )
            with _spawn.Pool(clients) as pool:
                # The servers are `Served` processes logging to LOGS; Bench starts none.
                bench = Bench(args, pool, log_path=os.devnull)
                results = _measure(bench, served, world, args, clients)
    finally:
        next(databases, None)
    print_table(results, args.workers)
    return results


def _measure(bench, served, world, args, clients) -> dict[str, Any]:
    rounds: dict[str, dict[int, list[dict[str, Any]]]] = {
        scenario: {n: [] for n in served} for scenario in SCENARIOS
    }
    for round_number in range(args.rounds):
        for scenario in SCENARIOS:
            order = list(served) if round_number % 2 == 0 else list(reversed(served))
            for workers in order:
                server = served[workers]
                before = server.handled(scenario)
                job = Job(
                    scenario,
                    server.port,
                    args.concurrency,
                    args.duration,
                    args.warmup,
                    world,
                    channels=args.channels,
                )
                seen = bench.measure(job, clients)
                after = server.handled(scenario)
                seen["per_process"] = [
                    (a or 0) - (b or 0) for a, b in zip(after, before, strict=True)
                ]
                rounds[scenario][workers].append(seen)
                print(
                    f"  round {round_number + 1} {scenario:10} --workers {workers}:"
                    f" {seen['calls_per_s']:7.0f}/s  calls per process {seen['per_process']}",
                    flush=True,
                )
    results: dict[str, Any] = {}
    base = args.workers[0]
    for scenario, by_workers in rounds.items():
        results[scenario] = {}
        for workers, seen in by_workers.items():
            ratios = [
                s["calls_per_s"] / b["calls_per_s"]
                for s, b in zip(seen, by_workers[base], strict=True)
            ]
            results[scenario][str(workers)] = {
                "calls_per_s": statistics.median(s["calls_per_s"] for s in seen),
                "p50_ms": statistics.median(s["p50_ms"] for s in seen),
                "p99_ms": statistics.median(s["p99_ms"] for s in seen),
                # Each round's pair ran back to back: the median of their ratios.
                "ratio": statistics.median(ratios),
                "ratio_range": [min(ratios), max(ratios)],
                "rounds": seen,
            }
    return results


def print_table(results: dict[str, Any], workers: list[int]) -> None:
    if not results:
        return
    base = workers[0]
    print(
        f"\ncalls/s (p99 ms), medians of rounds; ratio: median of each round's N/{base}"
        " [lowest, highest]"
    )
    print("  " + f"{'call':12}" + "".join(f"{f'--workers {n}':>32}" for n in workers))
    for scenario, by_workers in results.items():
        cells = []
        for n in workers:
            seen = by_workers[str(n)]
            cell = f"{seen['calls_per_s']:.0f} ({seen['p99_ms']:.0f})"
            if n != base:
                low, high = seen["ratio_range"]
                cell += f" ×{seen['ratio']:.2f} [{low:.2f}, {high:.2f}]"
            cells.append(f"{cell:>32}")
        print(f"  {scenario:12}" + "".join(cells))
