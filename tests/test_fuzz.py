"""Property-based: random and adversarial requests to every RPC never break the contract.

Never INTERNAL or UNKNOWN, every error with its documented details, no other team's data,
the server up, and the database consistent afterwards. Derandomised and bounded for CI.
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agenttasks.server.server import SERVICES
from agenttasks.server.storage import db
from agenttasks.v1 import tasks_pb2, teams_pb2

from .conftest import SECRET
from .helpers import error_body

# Calls that would end the caller's own credentials mid-suite (tested elsewhere).
SKIPPED = {"RotateTeamApiKey"}
METHODS = [
    (service, method)
    for service in SERVICES
    for method in service.methods
    if method.name not in SKIPPED
]
# Answers the client gives itself: a deadline the suite sets on waits and streams.
CLIENT_SIDE = {grpc.StatusCode.DEADLINE_EXCEEDED}
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}

FORGED = ["", "c" + "0" * 24, "a" * 33, "x\x00y", "Z" * 5000, "ä", "../etc", "1abc"]


class Fixture:
    """Two teams' worth of ids: ours to use, theirs that must never come back."""

    def __init__(self, world, other_world) -> None:
        self.world = world
        project = world.project()
        agent, self.agent_client = world.agent("fuzzer")
        self.agent_id = agent.id
        task = world.admin.tasks.CreateTask(
            tasks_pb2.CreateTaskRequest(project_id=project.id, title="seed")
        ).task
        theirs = other_world.project()
        their_task = other_world.admin.tasks.CreateTask(
            tasks_pb2.CreateTaskRequest(project_id=theirs.id, title="theirs")
        ).task
        their_agent, _ = other_world.agent("theirs")
        self.own_ids = [world.id, project.id, agent.id, task.id]
        self.foreign_ids = [other_world.id, theirs.id, their_task.id, their_agent.id]

    def agent(self):
        """The fuzzing agent's client, re-created when a fuzzed call revoked its token."""
        try:
            self.agent_client.teams.WhoAmI(teams_pb2.WhoAmIRequest(), timeout=5)
        except grpc.RpcError:
            agent, self.agent_client = self.world.agent("fuzzer")
            self.agent_id = agent.id
        return self.agent_client


def _strings(fixture: Fixture) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=40),
        st.sampled_from(FORGED + fixture.own_ids + fixture.foreign_ids),
        st.integers(0, 200_000).map(lambda n: "x" * n),
    )


def _message(descriptor, fixture: Fixture, depth: int = 0) -> st.SearchStrategy[dict]:
    fields = {}
    for field in descriptor.fields:
        value = _field(field, fixture, depth)
        if value is not None:
            fields[field.name] = value
    return st.fixed_dictionaries({}, optional=fields)


def _scalar(field, fixture: Fixture, depth: int):
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return _strings(fixture)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        return st.integers(-3, 12)
    if kind in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32):
        return st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, 1, -1, 100, 101]))
    if kind in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64):
        return st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-5, 5))
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64):
        return st.integers(0, 2**32 - 1)
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=False, width=32)
    if kind == FieldDescriptor.TYPE_MESSAGE:
        name = field.message_type.full_name
        if name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
            return st.fixed_dictionaries(
                {
                    "seconds": st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-100, 100)),
                    "nanos": st.integers(-(2**31), 2**31 - 1),
                }
            )
        if name == "google.protobuf.FieldMask":
            return st.fixed_dictionaries({"paths": st.lists(_strings(fixture), max_size=4)})
        if depth < 2 and not field.message_type.GetOptions().map_entry:
            return _message(field.message_type, fixture, depth + 1)
    return None


def _field(field, fixture: Fixture, depth: int):
    value = _scalar(field, fixture, depth)
    if value is None:
        return None
    if field.is_repeated:
        return st.lists(value, max_size=3)
    return value


def _build(cls, values: dict):
    message = cls()
    for name, value in values.items():
        target = message.DESCRIPTOR.fields_by_name[name]
        try:
            if target.type == FieldDescriptor.TYPE_MESSAGE:
                items = value if target.is_repeated else [value]
                for item in items:
                    sub = (
                        getattr(message, name).add()
                        if target.is_repeated
                        else getattr(message, name)
                    )
                    sub.CopyFrom(_build(type(sub), item))
            elif target.is_repeated:
                getattr(message, name).extend(value)
            else:
                setattr(message, name, value)
        except (ValueError, TypeError):
            continue  # not representable in this field (the raw-bytes case covers the wire)
    return message


def _call(channel, service, method, data: bytes, token: str):
    path = f"/{service.full_name}/{method.name}"
    metadata = [("authorization", f"Bearer {token}")]
    waits = method.name in ("ClaimNextTask", "WatchTasks")
    timeout = 0.5 if waits else 10
    if method.server_streaming:
        stream = channel.unary_stream(path)(data, metadata=metadata, timeout=timeout)
        return [bytes(item) for item in stream]
    return [channel.unary_unary(path)(data, metadata=metadata, timeout=timeout)]


def _check(fixture: Fixture, channel, service, method, data: bytes, as_agent: bool) -> None:
    token = fixture.agent().token if as_agent else fixture.world.key
    try:
        answers = _call(channel, service, method, data, token)
    except grpc.RpcError as error:
        if error.code() in CLIENT_SIDE:
            return
        assert error.code() not in NEVER, (method.name, error.code(), error.details())
        if error.code() == grpc.StatusCode.UNIMPLEMENTED:
            return  # an RPC of the proto that this build does not serve yet
        error_body(error)
        return
    for answer in answers:
        leaked = [i for i in fixture.foreign_ids if i.encode() in answer]
        assert not leaked, (method.name, leaked)


@pytest.fixture(scope="module")
def fixture(channel):
    from .conftest import new_team

    return Fixture(new_team(channel, "fuzz"), new_team(channel, "fuzz other"))


@pytest.mark.parametrize(
    ("service", "method"), METHODS, ids=[f"{s.name}.{m.name}" for s, m in METHODS]
)
def test_random_requests_get_documented_answers(fixture, channel, service, method):
    cls = message_factory.GetMessageClass(method.input_type)

    @settings(
        max_examples=40,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        values=_message(method.input_type, fixture),
        raw=st.one_of(st.none(), st.binary(max_size=64)),
        as_agent=st.booleans(),
    )
    def check(values, raw, as_agent):
        data = raw if raw is not None else _build(cls, values).SerializeToString()
        _check(fixture, channel, service, method, data, as_agent)

    check()


def test_the_database_is_consistent_and_events_hold_no_secrets(fixture, channel, backend):
    """Runs after the suite above (same module): integrity, no orphans, no secrets."""
    database = db.database
    if backend == "sqlite":
        assert database.execute_sql("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert database.execute_sql("PRAGMA foreign_key_check").fetchall() == []
    orphans = {
        "task without project": "SELECT count(*) FROM task WHERE project_id NOT IN "
        "(SELECT id FROM project)",
        "task of another team's project": "SELECT count(*) FROM task JOIN project "
        "ON project.id = task.project_id WHERE project.team_id <> task.team_id",
        "agent without team": "SELECT count(*) FROM agent WHERE team_id NOT IN "
        "(SELECT id FROM team)",
    }
    for what, query in orphans.items():
        assert database.execute_sql(query).fetchone()[0] == 0, what
    payloads = database.execute_sql("SELECT payload FROM task_event").fetchall()
    leaked = [row[0] for row in payloads if SECRET.search(str(row[0]))]
    assert not leaked, leaked[:3]
    fixture.world.admin.teams.WhoAmI(teams_pb2.WhoAmIRequest(), timeout=5)
