"""The server as grpcurl sees it: reflection, health, error details, and the README's
walk-throughs, run command for command so the README stays true."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agenttasks.v1 import tasks_pb2

README = Path(__file__).resolve().parent.parent / "README.md"
README_ADDRESS = "localhost:50051"

SERVICES = {
    "agenttasks.v1.TaskService",
    "agenttasks.v1.ProjectService",
    "agenttasks.v1.AgentService",
    "agenttasks.v1.WebhookService",
    "agenttasks.v1.TeamService",
    "grpc.health.v1.Health",
}
REFLECTION = {"grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}

# grpcurl exits with 64 + the gRPC status code of a failed call.
UNAUTHENTICATED_EXIT = 64 + 16
PERMISSION_DENIED_EXIT = 64 + 7
FAILED_PRECONDITION_EXIT = 64 + 9


def _grpcurl_path() -> str:
    beside = Path(sys.executable).parent / "grpcurl"
    if beside.exists():
        return str(beside)
    found = shutil.which("grpcurl")
    assert found, "grpcurl not found: install the dev extras (make test does)"
    return found


GRPCURL = _grpcurl_path()


@pytest.fixture
def address(server) -> str:
    return f"127.0.0.1:{server.port}"


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRPCURL, *args], capture_output=True, text=True, timeout=60)


def details_of(stderr: str) -> list[dict]:
    """The status details grpcurl prints after a failed call, one compact JSON per line."""
    return [json.loads(line) for line in re.findall(r"^\s*\d+\)\s+(\{.*\})\s*$", stderr, re.M)]


# --- reflection, health, errors ---------------------------------------------------------


def test_list_without_token_shows_every_service(address):
    done = grpcurl("-plaintext", address, "list")
    assert done.returncode == 0, done.stderr
    listed = set(done.stdout.split())
    assert listed >= SERVICES
    assert listed & REFLECTION, listed
    assert listed <= SERVICES | REFLECTION, f"unexpected services: {listed - SERVICES - REFLECTION}"


def test_list_methods_of_a_service(address):
    done = grpcurl("-plaintext", address, "list", "agenttasks.v1.TaskService")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        f"agenttasks.v1.TaskService.{name}"
        for name in (
            "ClaimNextTask",
            "ClaimTask",
            "CompleteTask",
            "CreateTask",
            "GetTask",
            "HeartbeatTask",
            "ListTaskEvents",
            "ListTasks",
            "MoveTask",
            "UpdateTask",
            "WatchTasks",
        )
    ]


def test_describe_service_and_messages(address):
    done = grpcurl("-plaintext", address, "describe", "agenttasks.v1.TaskService")
    assert done.returncode == 0, done.stderr
    assert "agenttasks.v1.TaskService is a service:" in done.stdout
    assert (
        "rpc ClaimTask ( .agenttasks.v1.ClaimTaskRequest ) "
        "returns ( .agenttasks.v1.ClaimTaskResponse );" in done.stdout
    )
    assert (
        "rpc WatchTasks ( .agenttasks.v1.WatchTasksRequest ) "
        "returns ( stream .agenttasks.v1.WatchTasksResponse );" in done.stdout
    )

    done = grpcurl("-plaintext", address, "describe", "agenttasks.v1.ErrorDetail")
    assert done.returncode == 0, done.stderr
    assert "agenttasks.v1.ErrorDetail is a message:" in done.stdout
    for field in ("string error = 1;", "string code = 2;", "int32 status_code = 3"):
        assert field in done.stdout

    done = grpcurl("-plaintext", address, "describe", "agenttasks.v1.TaskStatus")
    assert done.returncode == 0, done.stderr
    assert "TASK_STATUS_IN_PROGRESS = 2;" in done.stdout

    # Types the protos import (well-known and googleapis ones) resolve as well.
    done = grpcurl("-plaintext", address, "describe", "agenttasks.v1.ClaimTaskRequest")
    assert done.returncode == 0, done.stderr
    assert ".google.protobuf.Duration lease_duration = 3;" in done.stdout


def test_describe_a_single_method_and_an_unknown_symbol(address):
    done = grpcurl("-plaintext", address, "describe", "agenttasks.v1.TaskService.ClaimTask")
    assert done.returncode == 0, done.stderr
    assert "agenttasks.v1.TaskService.ClaimTask is a method:" in done.stdout
    assert "// hold returns it unchanged. `TASK_ALREADY_CLAIMED` if another agent holds" in (
        done.stdout
    ), "describe shows the proto comments"
    done = grpcurl("-plaintext", address, "describe", "agenttasks.v1.NoSuchThing")
    assert done.returncode != 0
    assert "Symbol not found" in done.stderr


def test_call_without_token_prints_unauthenticated_with_details(address):
    done = grpcurl("-plaintext", address, "agenttasks.v1.TeamService/WhoAmI")
    assert done.returncode == UNAUTHENTICATED_EXIT, (done.returncode, done.stderr)
    assert done.stdout == ""
    assert re.search(r"Code:\s*Unauthenticated", done.stderr), done.stderr
    assert re.search(r"Message:\s*Invalid or missing token", done.stderr), done.stderr
    assert re.search(r'"statusCode"\s*:\s*401\b', done.stderr), done.stderr
    details = {detail["@type"].rsplit("/", 1)[1]: detail for detail in details_of(done.stderr)}
    assert details["agenttasks.v1.ErrorDetail"] == {
        "@type": "type.googleapis.com/agenttasks.v1.ErrorDetail",
        "error": "Invalid or missing token",
        "code": "UNAUTHORIZED",
        "statusCode": 401,
    }
    info = details["google.rpc.ErrorInfo"]
    assert (info["reason"], info["domain"], info["metadata"]) == (
        "UNAUTHORIZED",
        "agenttasks",
        {"statusCode": "401"},
    )


@pytest.mark.parametrize(
    "header",
    [
        "authorization: Bearer tk_" + "0" * 64,  # well-formed, unknown
        "authorization: Bearer tk_nothex",  # malformed
        "authorization: Basic dXNlcjpwYXNz",  # wrong scheme
    ],
)
def test_bad_tokens_print_unauthenticated(address, header):
    done = grpcurl("-plaintext", "-H", header, address, "agenttasks.v1.TeamService/WhoAmI")
    assert done.returncode == UNAUTHENTICATED_EXIT, done.stderr
    assert re.search(r'"statusCode"\s*:\s*401\b', done.stderr), done.stderr


def test_format_error_prints_the_status_as_json(address):
    done = grpcurl(
        "-plaintext", "-format-error", address, "agenttasks.v1.ProjectService/ListProjects"
    )
    assert done.returncode == UNAUTHENTICATED_EXIT, done.stderr
    status = json.loads(done.stderr)
    assert status["code"] == 16
    assert status["message"] == "Invalid or missing token"
    codes = {detail.get("code") or detail.get("reason") for detail in status["details"]}
    assert codes == {"UNAUTHORIZED"}


def test_team_key_works_with_any_scheme_case(world, address):
    done = grpcurl(
        "-plaintext",
        "-H",
        f"authorization: bearer {world.key}",
        address,
        "agenttasks.v1.TeamService/WhoAmI",
    )
    assert done.returncode == 0, done.stderr
    me = json.loads(done.stdout)
    assert me["team_id"] == world.id
    assert me["token_kind"] == "TOKEN_KIND_TEAM_API_KEY"


@pytest.mark.parametrize("header", [None, "authorization: Bearer not-a-token"])
def test_health_needs_no_token(address, header):
    auth = ["-H", header] if header else []
    for service in ("", "agenttasks.v1.TaskService", "agenttasks.v1.WebhookService"):
        done = grpcurl(
            "-plaintext",
            *auth,
            "-d",
            json.dumps({"service": service}),
            address,
            "grpc.health.v1.Health/Check",
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"status": "SERVING"}


def test_reflection_ignores_a_bad_token(address):
    done = grpcurl("-plaintext", "-H", "authorization: Bearer nonsense", address, "list")
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) >= SERVICES


# --- the README walk-throughs -------------------------------------------------------------
# Each command below appears verbatim in README.md and runs here through a shell with
# grpcurl on PATH, localhost:50051 pointing at the test server, and the variables the
# README asks the reader to set from earlier responses.

LIST = "grpcurl -plaintext localhost:50051 list"
DESCRIBE = "grpcurl -plaintext localhost:50051 describe agenttasks.v1.TaskService"
HEALTH = "grpcurl -plaintext localhost:50051 grpc.health.v1.Health/Check"
CREATE_PROJECT = """\
grpcurl -plaintext -H "authorization: Bearer $KEY" -d '{"name": "Demo"}' \\
  localhost:50051 agenttasks.v1.ProjectService/CreateProject"""
CREATE_WORKER_1 = """\
grpcurl -plaintext -H "authorization: Bearer $KEY" -d '{"name": "worker-1"}' \\
  localhost:50051 agenttasks.v1.AgentService/CreateAgent"""
CREATE_WORKER_2 = """\
grpcurl -plaintext -H "authorization: Bearer $KEY" -d '{"name": "worker-2"}' \\
  localhost:50051 agenttasks.v1.AgentService/CreateAgent"""
WHO_AM_I_WITHOUT_TOKEN = "grpcurl -plaintext localhost:50051 agenttasks.v1.TeamService/WhoAmI"
AGENT_CREATES_PROJECT = """\
grpcurl -plaintext -H "authorization: Bearer $WORKER1" -d '{"name": "Mine"}' \\
  localhost:50051 agenttasks.v1.ProjectService/CreateProject"""
CREATE_TASK = """\
grpcurl -plaintext -H "authorization: Bearer $KEY" -d @ \\
  localhost:50051 agenttasks.v1.TaskService/CreateTask <<EOF
{"project_id": "$PROJECT", "title": "Summarise the Q3 report"}
EOF"""
LIST_TODO = """\
grpcurl -plaintext -H "authorization: Bearer $WORKER1" -d '{"status": "TASK_STATUS_TODO"}' \\
  localhost:50051 agenttasks.v1.TaskService/ListTasks"""
CLAIM_1 = """\
grpcurl -plaintext -H "authorization: Bearer $WORKER1" -d @ \\
  localhost:50051 agenttasks.v1.TaskService/ClaimTask <<EOF
{"task_id": "$TASK"}
EOF"""
CLAIM_2 = CLAIM_1.replace("$WORKER1", "$WORKER2")
COMPLETE = """\
grpcurl -plaintext -H "authorization: Bearer $WORKER1" -d @ \\
  localhost:50051 agenttasks.v1.TaskService/CompleteTask <<EOF
{"task_id": "$TASK", "result": "Revenue up 12%, costs flat; two risks flagged."}
EOF"""
GET = """\
grpcurl -plaintext -H "authorization: Bearer $WORKER1" -d @ \\
  localhost:50051 agenttasks.v1.TaskService/GetTask <<EOF
{"task_id": "$TASK"}
EOF"""

WALKTHROUGH = [
    LIST,
    DESCRIBE,
    HEALTH,
    CREATE_PROJECT,
    CREATE_WORKER_1,
    CREATE_WORKER_2,
    WHO_AM_I_WITHOUT_TOKEN,
    AGENT_CREATES_PROJECT,
    CREATE_TASK,
    LIST_TODO,
    CLAIM_1,
    CLAIM_2,
    COMPLETE,
    GET,
]


def test_readme_shows_every_walkthrough_command():
    readme = README.read_text(encoding="utf-8")
    missing = [command for command in WALKTHROUGH if command not in readme]
    assert not missing, "README.md lost these walk-through commands:\n\n" + "\n\n".join(missing)
    positions = [readme.index(command) for command in WALKTHROUGH]
    assert positions == sorted(positions), "README.md shows the walk-through out of order"


class Shell:
    """Runs README commands the way a reader would, against the test server."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.variables: dict[str, str] = {}
        path = os.pathsep.join([str(Path(GRPCURL).parent), os.environ.get("PATH", "")])
        self.env = {**os.environ, "PATH": path}

    def run(self, command: str, expect_exit: int = 0) -> subprocess.CompletedProcess[str]:
        shell = shutil.which("bash") or shutil.which("sh")
        assert shell
        script = command.replace(README_ADDRESS, self.address)
        assert script != command or "localhost" not in command
        done = subprocess.run(
            [shell, "-c", script],
            env={**self.env, **self.variables},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == expect_exit, (command, done.returncode, done.stderr)
        return done

    def start(self, command: str) -> subprocess.Popen[str]:
        """Starts a command that runs on (a stream) and returns at once."""
        shell = shutil.which("bash") or shutil.which("sh")
        assert shell
        return subprocess.Popen(
            [shell, "-c", command.replace(README_ADDRESS, self.address)],
            env={**self.env, **self.variables},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def json(self, command: str) -> dict:
        return json.loads(self.run(command).stdout)


def test_readme_walkthrough(world, address):
    sh = Shell(address)

    # 1. Explore without a token.
    assert set(sh.run(LIST).stdout.split()) >= SERVICES
    assert "rpc ClaimTask" in sh.run(DESCRIBE).stdout
    assert sh.json(HEALTH) == {"status": "SERVING"}

    # 2. With the Team API Key: a project and two agents.
    sh.variables["KEY"] = world.key
    project = sh.json(CREATE_PROJECT)["project"]
    assert project["name"] == "Demo"
    assert project["team_id"] == world.id
    sh.variables["PROJECT"] = project["id"]

    first = sh.json(CREATE_WORKER_1)
    second = sh.json(CREATE_WORKER_2)
    for created, name in ((first, "worker-1"), (second, "worker-2")):
        assert created["agent"]["name"] == name
        assert created["agent"]["status"] == "AGENT_STATUS_ACTIVE"
        assert re.fullmatch(r"at_[0-9a-f]{64}", created["token"])
    sh.variables["WORKER1"] = first["token"]
    sh.variables["WORKER2"] = second["token"]

    # 3. Errors and their details.
    denied = sh.run(WHO_AM_I_WITHOUT_TOKEN, expect_exit=UNAUTHENTICATED_EXIT)
    assert "Code: Unauthenticated" in denied.stderr
    assert re.search(r'"statusCode"\s*:\s*401\b', denied.stderr)
    forbidden = sh.run(AGENT_CREATES_PROJECT, expect_exit=PERMISSION_DENIED_EXIT)
    assert "Code: PermissionDenied" in forbidden.stderr
    assert "Message: Agent tokens cannot create projects" in forbidden.stderr
    assert re.search(r'"code"\s*:\s*"FORBIDDEN"', forbidden.stderr)
    assert re.search(r'"statusCode"\s*:\s*403\b', forbidden.stderr)

    # 4. The agent loop.
    task = sh.json(CREATE_TASK)["task"]
    assert (task["title"], task["status"]) == ("Summarise the Q3 report", "TASK_STATUS_TODO")
    assert task["project_id"] == project["id"]
    sh.variables["TASK"] = task["id"]

    todo = sh.json(LIST_TODO)
    assert [t["id"] for t in todo["tasks"]] == [task["id"]]

    claimed = sh.json(CLAIM_1)["task"]
    assert claimed["status"] == "TASK_STATUS_IN_PROGRESS"
    assert claimed["assigned_agent_id"] == first["agent"]["id"]

    lost = sh.run(CLAIM_2, expect_exit=FAILED_PRECONDITION_EXIT)
    assert "Code: FailedPrecondition" in lost.stderr
    assert re.search(r'"code"\s*:\s*"TASK_ALREADY_CLAIMED"', lost.stderr), lost.stderr
    assert re.search(r'"statusCode"\s*:\s*409\b', lost.stderr), lost.stderr

    done = sh.json(COMPLETE)["task"]
    assert done["status"] == "TASK_STATUS_DONE"
    assert done["result"] == "Revenue up 12%, costs flat; two risks flagged."

    got = sh.json(GET)["task"]
    assert got["status"] == "TASK_STATUS_DONE"
    assert got["assigned_agent_id"] == first["agent"]["id"]
    assert got["result"] == done["result"]
    assert sh.json(LIST_TODO) == {}  # nothing left to do; grpcurl omits empty fields


# --- the README's lease walk-through -------------------------------------------------------

LEASE_CREATE = """\
grpcurl -plaintext -H "authorization: Bearer $KEY" -d @ \\
  localhost:50051 agenttasks.v1.TaskService/CreateTask <<EOF
{"project_id": "$PROJECT", "title": "Translate the release notes", "max_attempts": 3}
EOF"""
CLAIM_NEXT = """\
grpcurl -plaintext -H "authorization: Bearer $WORKER1" \\
  -d '{"wait": "20s", "lease_duration": "30s"}' \\
  localhost:50051 agenttasks.v1.TaskService/ClaimNextTask"""
HEARTBEAT = """\
grpcurl -plaintext -H "authorization: Bearer $WORKER1" -d @ \\
  localhost:50051 agenttasks.v1.TaskService/HeartbeatTask <<EOF
{"task_id": "$LEASED", "lease_duration": "30s", "progress": "3 of 7 sections"}
EOF"""
WATCH = """\
grpcurl -plaintext -max-time 5 -H "authorization: Bearer $KEY" -d '{}' \\
  localhost:50051 agenttasks.v1.TaskService/WatchTasks"""
LEASE_WALKTHROUGH = [LEASE_CREATE, CLAIM_NEXT, HEARTBEAT, WATCH]
DEADLINE_EXCEEDED_EXIT = 64 + 4


def test_readme_shows_the_lease_walkthrough_in_order():
    readme = README.read_text(encoding="utf-8")
    missing = [command for command in LEASE_WALKTHROUGH if command not in readme]
    assert not missing, "README.md lost these commands:\n\n" + "\n\n".join(missing)
    positions = [readme.index(command) for command in LEASE_WALKTHROUGH]
    assert positions == sorted(positions)


def test_readme_lease_walkthrough(world, address):
    sh = Shell(address)
    sh.variables["KEY"] = world.key
    sh.variables["PROJECT"] = world.project("Demo").id
    worker, worker_client = world.agent("worker-1")
    assert worker_client.token is not None
    sh.variables["WORKER1"] = worker_client.token

    created = sh.json(LEASE_CREATE)["task"]
    assert created["max_attempts"] == 3
    leased = sh.json(CLAIM_NEXT)["task"]
    assert (leased["id"], leased["status"]) == (created["id"], "TASK_STATUS_IN_PROGRESS")
    assert "lease_expire_time" in leased
    sh.variables["LEASED"] = leased["id"]
    beat = sh.json(HEARTBEAT)["task"]
    assert beat["progress"] == "3 of 7 sections"
    assert beat["lease_expire_time"] >= leased["lease_expire_time"]

    watcher = sh.start(WATCH)
    time.sleep(1.5)  # the stream shows events from when it opens
    worker_client.tasks.CompleteTask(tasks_pb2.CompleteTaskRequest(task_id=leased["id"]))
    output, _ = watcher.communicate(timeout=30)
    assert watcher.returncode == DEADLINE_EXCEEDED_EXIT
    events = [json.loads(part) for part in re.split(r"(?<=\})\n(?=\{)", output.strip())]
    assert [(e["event"], e["agent"]["id"]) for e in events] == [("task.completed", worker.id)]
