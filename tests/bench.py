"""`make bench`: throughput of a real server against the ceiling of grpc.aio on this machine.

The ceiling is an empty, plain async unary handler served with our server's options. Each
measurement of ours is preceded by one of the ceiling (3 rounds, medians), so noise on a
shared machine hits both; ratios to the ceiling are the figures to compare across machines.
Servers and load generators run in separate processes. Writes build/bench.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import bench_latency
from .bench_load import Job, Seen, drive
from .bench_servers import serve_agenttasks, serve_ceiling

SCENARIOS = [
    "WhoAmI",
    "GetTask",
    "ListTasks",
    "CreateTask",
    "ClaimTask→CompleteTask",
    "ClaimNextTask",
    "WatchTasks",
]
CYCLE = "ClaimTask→CompleteTask"  # a claim, then a complete of the same task: two calls
WATCH_STREAMS = 100
REPORT = Path("build/bench.json")
_spawn = multiprocessing.get_context("spawn")  # no process inherits a started gRPC core


@contextmanager
def _server(target, *args) -> Iterator[tuple[dict, Any, Any]]:
    """Starts `target(conn, *args)` in a process; yields what it sent first, conn, process."""
    ours, theirs = _spawn.Pipe()
    process = _spawn.Process(target=target, args=(theirs, *args), daemon=True)
    process.start()
    try:
        yield ours.recv(), ours, process
    finally:
        ours.send(("stop",))
        process.join(20)
        if process.is_alive():
            process.kill()


def _postgres_database(admin_url: str, suffix: str = "") -> Iterator[str | None]:
    """A fresh database beside `admin_url` (dropped afterwards), or None without a server;
    `suffix` tells apart several of one benchmark."""
    import psycopg2

    try:
        admin = psycopg2.connect(admin_url, connect_timeout=3)
    except psycopg2.OperationalError:
        yield None
        return
    admin.autocommit = True
    name = f"agenttasks_bench_{os.getpid()}{suffix}"
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


class Bench:
    def __init__(self, args: argparse.Namespace, pool, log_path: str) -> None:
        self.args = args
        self.pool = pool
        self.log_path = log_path  # the server logs each call there, as `serve` does

    def measure(self, job: Job, processes: int, server_pid: int | None = None) -> dict[str, float]:
        """Runs `job` split over `processes` client processes; calls/s, p50 and p99 in ms,
        and the server process's CPU time per call (µs), which noise on a shared machine
        moves far less than calls/s (0 without `server_pid`: a server of several processes).
        """
        jobs = []
        for index in range(processes):
            share = job.concurrency // processes + (index < job.concurrency % processes)
            claimable = job.claimable[index::processes]
            jobs.append(
                Job(**{**vars(job), "concurrency": share, "claimable": claimable})
                if share
                else None
            )
        for index, part in enumerate(jobs):
            if part is not None:
                part.writer = index == 0
        cpu_before = _cpu_seconds(server_pid)
        seen: list[Seen] = self.pool.map(drive, [part for part in jobs if part is not None])
        cpu = _cpu_seconds(server_pid) - cpu_before
        latencies = sorted(x for part in seen for x in part.latencies) or [0.0]
        rate = sum(part.calls / part.seconds for part in seen)
        # Calls made during the warm-up used CPU too: count them at the measured rate.
        calls = rate * (job.duration + job.warmup)
        return {
            "calls_per_s": rate,
            "cpu_us_per_call": cpu / calls * 1e6 if calls else 0.0,
            "p50_ms": latencies[len(latencies) // 2] * 1e3,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
            "exhausted": any(part.exhausted for part in seen),
        }

    def job(self, scenario: str, port: int, world: dict | None = None, **extra) -> Job:
        return Job(
            scenario,
            port,
            self.args.concurrency,
            self.args.duration,
            self.args.warmup,
            world or {},
            **extra,
        )


def write_report(path: Path, report: dict[str, Any], started: float) -> None:
    """Writes `report` as JSON, with the seconds since `started`, and says so."""
    report["seconds"] = time.monotonic() - started
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"\n{path} written in {report['seconds']:.0f} s")


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0 elsewhere or without one)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _claimable_needed(args: argparse.Namespace, last_rate: float | None) -> int:
    # Twice the last rate seen over a measurement (warm-up included), at least 3,000.
    rate = last_rate or 1500.0
    return max(3000, int(2 * rate * (args.duration + args.warmup)))


def run_backend(
    bench: Bench, backend: str, url: str, ceiling_port: int, ceiling_pid: int
) -> dict[str, Any]:
    args = bench.args
    scenarios = args.scenario or SCENARIOS
    results: dict[str, Any] = {name: {"rounds": []} for name in scenarios}
    with _server(serve_agenttasks, url, args.max_workers, bench.log_path) as (world, conn, _):
        print(f"\n{backend}: server pid {world['pid']}, {args.rounds} rounds", flush=True)
        for round_number in range(args.rounds):
            for scenario in scenarios:
                ceiling = bench.measure(
                    bench.job("ceiling", ceiling_port), args.clients, ceiling_pid
                )
                extra: dict[str, Any] = {}
                concurrency = args.concurrency
                if scenario in (CYCLE, "ClaimNextTask"):
                    rounds = results[scenario]["rounds"]
                    last = rounds[-1]["target"]["calls_per_s"] if rounds else None
                    conn.send(("seed", world["projects"]["queue"], _claimable_needed(args, last)))
                    queued = conn.recv()
                    if scenario == CYCLE:
                        extra["claimable"] = queued
                if scenario == "WatchTasks":
                    concurrency = WATCH_STREAMS
                job = bench.job(scenario, world["port"], world, **extra)
                job.concurrency = concurrency
                target = bench.measure(job, args.clients, world["pid"])
                results[scenario]["rounds"].append({"ceiling": ceiling, "target": target})
                print(
                    f"  round {round_number + 1} {scenario:24} "
                    f"{target['calls_per_s']:8.0f}/s  (ceiling {ceiling['calls_per_s']:.0f}/s)",
                    flush=True,
                )
    for result in results.values():
        rounds = result["rounds"]
        for side in ("ceiling", "target"):
            result[side] = {
                key: statistics.median(r[side][key] for r in rounds)
                for key in ("calls_per_s", "p50_ms", "p99_ms", "cpu_us_per_call")
            }
        # Each round's pair saw the same moment of the machine: the median of their ratios.
        result["ratio"] = statistics.median(
            r["target"]["calls_per_s"] / r["ceiling"]["calls_per_s"] for r in rounds
        )
        # The same comparison in server CPU per call: what the ratio would be if the server
        # had the machine to itself (noise moves it far less).
        cpu_ratios = [
            r["ceiling"]["cpu_us_per_call"] / r["target"]["cpu_us_per_call"]
            for r in rounds
            if r["target"]["cpu_us_per_call"]  # 0 where /proc cannot be read
        ]
        result["cpu_ratio"] = statistics.median(cpu_ratios) if cpu_ratios else 0.0
        result["exhausted"] = any(r["target"]["exhausted"] for r in rounds)
    return results


def profile(bench: Bench, backend: str, url: str, scenario: str) -> None:
    """Samples our server with py-spy while `scenario` runs; writes collapsed stacks and SVG."""
    import subprocess
    import sys

    seconds = bench.args.duration
    REPORT.parent.mkdir(exist_ok=True)
    stem = REPORT.parent / f"profile-{scenario.split('→')[0]}-{backend}"
    server = (serve_agenttasks, url, bench.args.max_workers, bench.log_path)
    with _server(*server) as (world, conn, _):
        extra: dict[str, Any] = {}
        if scenario in (CYCLE, "ClaimNextTask"):
            conn.send(("seed", world["projects"]["queue"], 20_000))
            extra["claimable"] = conn.recv()
        spies = [
            subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("py-spy")),
                    "record",
                    "--nonblocking",
                    "--gil",
                    "--threads",
                    "--pid",
                    str(world["pid"]),
                    "--duration",
                    str(int(seconds)),
                    "--format",
                    form,
                    "--output",
                    f"{stem}.{suffix}",
                ],
                stdout=subprocess.DEVNULL,
            )
            for form, suffix in (("raw", "txt"), ("flamegraph", "svg"))
        ]
        job = bench.job(scenario, world["port"], world, **extra)
        job.duration, job.warmup = seconds + 1, 0.0
        print(scenario, bench.measure(job, bench.args.clients, world["pid"]))
        for spy in spies:
            spy.wait()
    print(f"wrote {stem}.txt (collapsed stacks) and {stem}.svg")


def print_table(backend: str, results: dict[str, Any]) -> None:
    print(f"\n{backend} (medians of rounds; ratio: median of the rounds' target/ceiling)")
    print("  p99 ×: our p99 / the ceiling's (medians of the rounds)")
    print("  cpu: the server's CPU µs per call; cpu ratio: ceiling's CPU per call / ours")
    print(
        f"  {'scenario':24} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'ceiling/s':>10} {'p99 ms':>8} {'ratio':>6} {'p99 ×':>6} "
        f"{'cpu':>6} {'ceiling':>7} {'ratio':>6}"
    )
    for scenario, result in results.items():
        target, ceiling = result["target"], result["ceiling"]
        note = "  (ran out of seeded tasks)" if result["exhausted"] else ""
        print(
            f"  {scenario:24} {target['calls_per_s']:9.0f} {target['p50_ms']:8.2f} "
            f"{target['p99_ms']:8.2f} {ceiling['calls_per_s']:10.0f} {ceiling['p99_ms']:8.2f} "
            f"{result['ratio']:6.3f} {_times(target['p99_ms'], ceiling['p99_ms']):>6} "
            f"{target['cpu_us_per_call']:6.0f} {ceiling['cpu_us_per_call']:7.0f} "
            f"{result['cpu_ratio']:6.3f}{note}"
        )
    if CYCLE in results:
        cycles = results[CYCLE]["target"]["calls_per_s"] / 2
        print(
            f"  {CYCLE}: each of its two calls counts, as the ceiling's calls do "
            f"({cycles:.0f} cycles/s); its latencies are those of the calls"
        )


def _times(ours: float, ceiling: float) -> str:
    return f"{ours / ceiling:.1f}" if ceiling else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight")
    parser.add_argument("--duration", type=float, default=1.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=0.3, help="seconds not measured")
    parser.add_argument("--clients", type=int, default=1, help="load generator processes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-workers", type=int, default=32, help="server's thread pool")
    parser.add_argument("--only", choices=["sqlite", "postgres"], help="one backend")
    parser.add_argument(
        "--scenario", action="append", choices=SCENARIOS, help="only these (repeatable)"
    )
    parser.add_argument(
        "--profile", choices=SCENARIOS, help="instead: sample the server under this load"
    )
    parser.add_argument(
        "--latency-repeat", type=int, default=200, help="calls per row of the latency table"
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "AGENTTASKS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
    started = time.monotonic()
    report: dict[str, Any] = {"settings": vars(args), "cpus": os.cpu_count(), "backends": {}}
    with (
        _spawn.Pool(args.clients) as pool,
        _server(serve_ceiling) as (ceiling, _, _),
        tempfile.TemporaryDirectory() as folder,
    ):
        bench = Bench(args, pool, f"{folder}/server.log")
        postgres = _postgres_database(args.postgres)
        backends = {"sqlite": f"sqlite:///{folder}/bench.db", "postgres": next(postgres)}
        try:
            for backend, url in backends.items():
                if args.only not in (None, backend):
                    continue
                if url is None:
                    print(f"\n{backend}: skipped (no server at the given URL)")
                    continue
                if args.profile:
                    profile(bench, backend, url, args.profile)
                    continue
                results = run_backend(bench, backend, url, ceiling["port"], ceiling["pid"])
                report["backends"][backend] = results
                print_table(backend, results)
        finally:
            next(postgres, None)
    if args.profile:
        return
    if args.latency_repeat:
        print("\nOne call at a time (mean latency)")
        with tempfile.TemporaryDirectory() as folder:
            latency = bench_latency.run(f"sqlite:///{folder}/latency.db", args.latency_repeat)
        bench_latency.report("sqlite", latency)
        report["latency_sqlite_s"] = latency
    write_report(REPORT, report, started)


if __name__ == "__main__":
    main()
