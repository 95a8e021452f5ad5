"""What operators see: one log line per call with a request id, and Prometheus metrics."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import time
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agenttasks.server.api.observe import go_code
from agenttasks.server.logs import CALLS, TEXT_FORMAT, CallLines, JsonFormatter
from agenttasks.server.ratelimit import RateLimits
from agenttasks.v1 import agents_pb2, tasks_pb2, teams_pb2

from .conftest import new_team, start_server
from .helpers import Client, raises
from .test_cli import TEAM_KEY, Served, free_port


def _calls(caplog) -> list[dict]:
    return [r.call for r in caplog.records if r.name == "agenttasks.calls"]


def _lines(caplog, count: int) -> list[logging.LogRecord]:
    """The last `count` call lines: a failed call's line may follow its status to the client."""
    deadline = time.monotonic() + 5
    while True:
        records = [r for r in caplog.records if r.name == "agenttasks.calls"]
        if len(records) >= count or time.monotonic() > deadline:
            return records[-count:]
        time.sleep(0.01)


def test_a_call_logs_one_line_and_echoes_the_request_id(world, caplog):
    caplog.set_level(logging.INFO, "agenttasks.calls")
    agent, agent_client = world.agent()
    caplog.clear()
    _, call = agent_client.teams.WhoAmI.with_call(
        teams_pb2.WhoAmIRequest(), metadata=[("x-request-id", "req-42")]
    )
    assert ("x-request-id", "req-42") in call.trailing_metadata()
    (line,) = _calls(caplog)
    assert line["method"] == "agenttasks.v1.TeamService/WhoAmI"
    assert line["code"] == "OK" and line["error_code"] == ""
    assert (line["team_id"], line["agent_id"]) == (world.id, agent.id)
    assert line["request_id"] == "req-42"
    assert "127.0.0.1" in line["peer"] and line["duration_ms"] >= 0
    text = caplog.records[-1].getMessage()
    assert "WhoAmI OK" in text and "request_id=req-42" in text and world.id in text


def test_a_call_without_request_id_gets_one(world, caplog):
    caplog.set_level(logging.INFO, "agenttasks.calls")
    _, call = world.admin.teams.WhoAmI.with_call(teams_pb2.WhoAmIRequest())
    echoed = dict(call.trailing_metadata())["x-request-id"]
    assert len(echoed) == 32
    assert _calls(caplog)[-1]["request_id"] == echoed


@pytest.mark.parametrize("sent", ["x" * 101, "two words", "tk_" + "ab" * 32, "at_0123456789abcdef"])
def test_a_request_id_that_is_not_a_plain_id_is_replaced(world, sent):
    _, call = world.admin.teams.WhoAmI.with_call(
        teams_pb2.WhoAmIRequest(), metadata=[("x-request-id", sent)]
    )
    echoed = dict(call.trailing_metadata())["x-request-id"]
    assert echoed != sent and len(echoed) == 32


def test_refusals_are_warnings_with_the_documented_code(world, caplog):
    caplog.set_level(logging.INFO, "agenttasks.calls")
    raises("UNAUTHORIZED", world.client("tk_" + "0" * 64).teams.WhoAmI, teams_pb2.WhoAmIRequest())
    raises("NOT_FOUND", world.admin.tasks.GetTask, tasks_pb2.GetTaskRequest(task_id="cnone"))
    refused, missing = _lines(caplog, 2)
    assert refused.levelno == logging.WARNING and missing.levelno == logging.INFO
    assert refused.call["code"] == "UNAUTHENTICATED"
    assert refused.call["error_code"] == "UNAUTHORIZED"
    assert refused.call["team_id"] == "" and "127.0.0.1" in refused.call["peer"]
    assert missing.call["error_code"] == "NOT_FOUND" and missing.call["team_id"] == world.id
    assert "tk_" not in refused.getMessage()


def test_json_format_is_one_object_per_line(world, caplog):
    caplog.set_level(logging.INFO, "agenttasks.calls")
    world.admin.teams.WhoAmI(teams_pb2.WhoAmIRequest())
    line = JsonFormatter().format(caplog.records[-1])
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "INFO" and entry["logger"] == "agenttasks.calls"
    assert entry["method"] == "agenttasks.v1.TeamService/WhoAmI" and entry["team_id"] == world.id


@pytest.mark.parametrize(
    ("code", "spelled"),
    [
        (grpc.StatusCode.OK, "OK"),
        (grpc.StatusCode.NOT_FOUND, "NotFound"),
        (grpc.StatusCode.PERMISSION_DENIED, "PermissionDenied"),
        (grpc.StatusCode.CANCELLED, "Canceled"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "DeadlineExceeded"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "ResourceExhausted"),
    ],
)
def test_codes_are_spelled_as_go_grpc_prometheus_does(code, spelled):
    assert go_code(code) == spelled


def _scrape(port: int) -> dict[str, list]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def _count(samples, name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_metrics_count_calls_per_method_and_code(database_url):
    metrics_port = free_port()
    # Limits off: failed attempts from 127.0.0.1 share one bucket in the database with
    # every other test's servers.
    running = start_server(metrics_port=metrics_port, rate_limits=RateLimits(0, 0, 0))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            world = new_team(channel)
            _, agent = world.agent()
            for _ in range(3):
                world.admin.teams.WhoAmI(teams_pb2.WhoAmIRequest())
            raises("NOT_FOUND", world.admin.tasks.GetTask, tasks_pb2.GetTaskRequest(task_id="cx"))
            raises("FORBIDDEN", agent.agents.CreateAgent, agents_pb2.CreateAgentRequest(name="x"))
            raises("UNAUTHORIZED", Client(channel, None).teams.WhoAmI, teams_pb2.WhoAmIRequest())
        time.sleep(0.2)  # a failed call is counted just after its status went out
        families = _scrape(metrics_port)
    finally:
        running.stop(0)
    handled = families["grpc_server_handled"]
    team = {"grpc_service": "agenttasks.v1.TeamService", "grpc_type": "unary"}
    name = "grpc_server_handled_total"
    assert _count(handled, name, grpc_method="WhoAmI", grpc_code="OK", **team) == 3
    assert _count(handled, name, grpc_method="WhoAmI", grpc_code="Unauthenticated", **team) == 1
    assert _count(handled, name, grpc_method="GetTask", grpc_code="NotFound") == 1
    assert _count(handled, name, grpc_method="CreateAgent", grpc_code="PermissionDenied") == 1
    started = families["grpc_server_started"]
    assert _count(started, "grpc_server_started_total", grpc_method="WhoAmI", **team) == 4
    seconds = families["grpc_server_handling_seconds"]
    assert _count(seconds, "grpc_server_handling_seconds_count", grpc_method="WhoAmI") == 4
    depth = {s.labels["status"]: s.value for s in families["agenttasks_tasks"]}
    assert set(depth) == {"todo", "in_progress", "done", "cancelled"}


# --- call lines written past the logging module (logs.CallLines) ---------------------------

CALL = {
    "method": "agenttasks.v1.TeamService/WhoAmI",
    "code": "OK",
    "error_code": "",
    "duration_ms": 0.4,
    "peer": "ipv4:127.0.0.1:5000",
    "team_id": "cteam",
    "agent_id": "",
    "request_id": "req-1",
}
MESSAGE = "agenttasks.v1.TeamService/WhoAmI OK 0.4ms peer=ipv4:127.0.0.1:5000 team=cteam"
STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


class _Stream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def _handler(form: str) -> tuple[logging.StreamHandler, _Stream]:
    stream = _Stream()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if form == "json" else logging.Formatter(TEXT_FORMAT))
    return handler, stream


def _as_logging_writes_it(handler: logging.Handler, level: int) -> str:
    record = logging.LogRecord(CALLS, level, "", 0, MESSAGE, None, None)
    record.call = CALL
    return handler.format(record)


@pytest.mark.parametrize("level", [logging.INFO, logging.WARNING])
def test_a_call_line_reads_as_the_text_formatter_writes_it(level):
    handler, stream = _handler("text")
    CallLines(handler, "text").write(level, MESSAGE, CALL)  # no event loop: written at once

    written = stream.getvalue()
    assert written.endswith("\n") and written.count("\n") == 1
    expected = _as_logging_writes_it(handler, level)
    assert STAMP.match(written) and STAMP.match(expected)
    assert STAMP.sub("", written, count=1) == STAMP.sub("", expected, count=1) + "\n"


def test_a_call_line_reads_as_the_json_formatter_writes_it():
    handler, stream = _handler("json")
    CallLines(handler, "json").write(logging.WARNING, MESSAGE, CALL)

    written = json.loads(stream.getvalue())
    expected = json.loads(_as_logging_writes_it(handler, logging.WARNING))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", written.pop("time"))
    expected.pop("time")
    assert written == expected


def test_the_lines_of_one_loop_turn_are_written_together():
    handler, stream = _handler("text")
    lines = CallLines(handler, "text")

    async def three_calls() -> str:
        for _ in range(3):
            lines.write(logging.INFO, MESSAGE, CALL)
        before = stream.getvalue()
        await asyncio.sleep(0)  # the turn ends
        return before

    assert asyncio.run(three_calls()) == ""
    assert stream.getvalue().count(MESSAGE) == 3 and stream.writes == 1


def test_call_lines_step_aside_when_other_handlers_listen(caplog):
    handler, _ = _handler("text")
    assert not CallLines(handler, "text").in_charge(logging.getLogger(CALLS))  # caplog's
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = [handler]
    try:
        assert CallLines(handler, "text").in_charge(logging.getLogger(CALLS))
    finally:
        root.handlers[:] = saved


@pytest.mark.parametrize("form", ["text", "json"])
def test_serve_logs_each_call_once(tmp_path, form):
    with Served(
        tmp_path, "--db", f"sqlite:///{tmp_path / 'calls.db'}", "--log-format", form
    ) as served:
        served.wait_serving()
        key = TEAM_KEY.findall(served.stderr)[0]
        for n in range(3):
            served.client(key).teams.WhoAmI(
                teams_pb2.WhoAmIRequest(), metadata=[("x-request-id", f"seen-{n}")], timeout=10
            )
        assert served.terminate() == 0
    calls = [line for line in served.stderr.splitlines() if "TeamService/WhoAmI" in line]
    assert len(calls) == 3, served.stderr
    for n, line in enumerate(calls):
        if form == "json":
            entry = json.loads(line)
            assert (entry["logger"], entry["request_id"], entry["code"]) == (
                CALLS,
                f"seen-{n}",
                "OK",
            )
        else:
            assert STAMP.match(line) and f" INFO {CALLS}: " in line
            assert line.endswith(f"request_id=seen-{n}")
