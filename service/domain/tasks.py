"""Tasks: create, read, update, and the lifecycle moves (claim, complete, move, heartbeat)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from typing import Any, cast

from peewee import fn

from ..storage.db import skip_locked, write_transaction
from ..storage.models import Agent, Project, Task, Team
from ..storage.prepared import Param, Statement, UnionAll
from . import idempotency, leases
from .errors import (
    EtagMismatch,
    Forbidden,
    InvalidTransition,
    NotAssignedAgent,
    NotFound,
    TaskAlreadyClaimed,
    TaskNotClaimable,
    TaskNotInProgress,
    ValidationError,
)
from .lifecycle import (
    CANCELLED,
    CANCELLED_EVENT,
    CLAIMED,
    COMPLETED,
    CREATED,
    DONE,
    IN_PROGRESS,
    MOVED,
    MOVES,
    TODO,
    UPDATED,
    clear_lease,
    etag_of,
    lock_agent,
    lock_task,
    save_with_events,
)
from .lookup import by_id_in_team, one_of_team
from .pagination import keyset, page_of, parse_page
from .projects import PROJECT_LOCK
from .validation import Checks, unknown_fields
from .values import MICROS, Caller, could_be_id, new_id, now_us, own_team

TITLE_MAX = 500
DESCRIPTION_MAX = 50_000
RESULT_MAX_BYTES = 1024 * 1024
PROGRESS_MAX = 10_000
MAX_LEASE_US = 24 * 3600 * MICROS
MAX_ATTEMPTS_MAX = 1000
PRIORITIES = (1, 2, 3)  # low, normal, high
NORMAL = 2
WRITABLE = {
    "title",
    "description",
    "priority",
    "project_id",
    "assigned_agent_id",
    "due_time",
    "max_attempts",
}


@dataclass(frozen=True)
class TaskFilter:
    """ListTasks filters; None means "any"."""

    status: str | None = None
    project_id: str | None = None
    agent_id: str | None = None
    priority: int | None = None


# --- reads ---------------------------------------------------------------------------------


def _as_seen(task: Task, now: int) -> Task:
    """The row as it stands at `now`: a lease that ran out reads as ended at once, as the
    sweeper (which writes it within a second) will write it."""
    if leases.is_due(task, now):
        ended_at = task.lease_expire_at or now
        leases.lapse(task)
        task.version += 1
        task.updated_at = ended_at
    return task


_TASK = by_id_in_team(Task.select)
_PROJECT_ID = by_id_in_team(lambda: Project.select(Project.id))
_AGENT_ID = by_id_in_team(lambda: Agent.select(Agent.id))


def _load(team_id: str, task_id: str) -> Task:
    return _as_seen(one_of_team(_TASK, team_id, task_id, "task"), now_us())


def _lock(team_id: str, task_id: str) -> Task:
    """The task, locked; a lease that ran out is ended first, in this transaction."""
    task = lock_task(team_id, task_id)
    if leases.is_due(task, now_us()):
        leases.expire(task)
    return task


def get_task(caller: Caller, task_id: str) -> Task:
    checks = Checks()
    checks.required("task_id", task_id)
    checks.done()
    return _load(caller.team_id, task_id)


def _status_as_seen(status: str, now: Any) -> list[Any]:
    """SQL conditions whose rows together read as `status` at `now`, expired leases included.

    A status that an expired lease also gives is two disjoint conditions, so each reads one
    index range in page order: the rows stored with it, and the rows in progress whose
    lease ran out (few: the sweeper writes them within a second). As one condition, with
    an OR, no index gives its order: a planner walks the team's rows in page order instead,
    and the first page of todo tasks under a million done ones read all of them.
    """
    lapsed = leases.lapsed(now)
    if status == TODO:
        return [Task.status == TODO, lapsed & ~leases.cancels()]
    if status == IN_PROGRESS:
        return [(Task.status == IN_PROGRESS) & leases.live(now)]
    if status == CANCELLED:
        return [Task.status == CANCELLED, lapsed & leases.cancels()]
    return [Task.status == status]


def list_tasks(
    caller: Caller, team_id: str, where: TaskFilter, page_size: int, page_token: str
) -> tuple[list[Task], str]:
    """The team's tasks, oldest first (creation time, then insertion order)."""
    team_id = own_team(caller, team_id)
    page = parse_page(page_size, page_token, ("tasks", team_id, where))
    if not all(could_be_id(i) for i in (where.project_id, where.agent_id) if i):
        return [], ""  # a filter naming what cannot exist matches nothing
    now = now_us()
    params: dict[str, Any] = {
        "team": team_id,
        "now": now,
        "limit": page.size + 1,
        "project": where.project_id,
        "agent": where.agent_id,
        "priority": where.priority,
    }
    if page.after is not None:
        params.update(after_created=page.after[0], after_seq=page.after[1])
    rows, next_page = page_of(list_page(where, page.after is not None).all(**params), page)
    return [_as_seen(row, now) for row in rows], next_page


def list_page(where: TaskFilter, resumed: bool) -> Statement[Task]:
    """ListTasks' statement for this shape of filter: a page of `list_queries`' rows.

    Parameters: team, now, limit, the filters set in `where` (project, agent, priority),
    and for a `resumed` listing the last row read (after_created, after_seq).
    """
    return _list_page(
        where.status, bool(where.project_id), bool(where.agent_id), bool(where.priority), resumed
    )


@cache
def _list_page(
    status: str | None, by_project: bool, by_agent: bool, by_priority: bool, resumed: bool
) -> Statement[Task]:
    named = TaskFilter(
        status,
        cast(Any, Param("project")) if by_project else None,
        cast(Any, Param("agent")) if by_agent else None,
        cast(Any, Param("priority")) if by_priority else None,
    )
    after = (Param("after_created"), Param("after_seq")) if resumed else None
    queries = list_queries(Param("team"), named, Param("now"))

    def page(part: int) -> Any:
        ordered = keyset(queries[part], Task, after)
        if part:
            # Expired leases: ordered by an expression, so that no planner walks an index
            # in page order to find these few rows; the lease index finds them.
            ordered = ordered.order_by(Task.created_at + 0, Task.seq + 0)
        return ordered.limit(Param("limit"))

    if len(queries) == 1:
        return Statement(lambda: page(0))
    parts: list[Callable[[], Any]] = [partial(page, n) for n in range(len(queries))]
    return UnionAll(parts, (Task.created_at, Task.seq), "limit")


def list_queries(team_id: Any, where: TaskFilter, now: Any) -> list[Any]:
    """ListTasks' selection (before paging) as it reads at `now`: the queries whose rows,
    disjoint, make it (see `_status_as_seen`); the first reads the rows stored as listed."""
    query = Task.select().where(Task.team == team_id)
    if where.project_id:
        query = query.where(Task.project == where.project_id)
    if where.agent_id:
        held = (Task.status != IN_PROGRESS) | leases.live(now)
        query = query.where((Task.assigned_agent == where.agent_id) & held)
    if where.priority:
        query = query.where(Task.priority == where.priority)
    if not where.status:
        return [query]
    return [query.where(condition) for condition in _status_as_seen(where.status, now)]


def _require_project(team_id: str, project_id: str) -> None:
    one_of_team(_PROJECT_ID, team_id, project_id, "project")


def _require_agent(team_id: str, agent_id: str) -> None:
    one_of_team(_AGENT_ID, team_id, agent_id, "agent")


def _check_priority(checks: Checks, field: str, priority: int) -> int:
    if priority not in PRIORITIES:
        checks.fail(field, "must be TASK_PRIORITY_LOW, TASK_PRIORITY_NORMAL or TASK_PRIORITY_HIGH")
    return priority


# --- create and update ---------------------------------------------------------------------


def create_task(
    caller: Caller,
    team_id: str,
    project_id: str,
    title: str,
    description: str = "",
    assigned_agent_id: str = "",
    priority: int = 0,
    due_time: int | None = None,
    max_attempts: int = 0,
    request_id: str = "",
) -> Task:
    team_id = own_team(caller, team_id)
    checks = Checks()
    checks.required("project_id", project_id)
    title = checks.name("title", title, TITLE_MAX)
    description = checks.text("description", description, DESCRIPTION_MAX)
    priority = _check_priority(checks, "priority", priority or NORMAL)
    checks.whole("max_attempts", max_attempts, 0, MAX_ATTEMPTS_MAX)
    checks.request_id(request_id)
    checks.done()

    def insert() -> Task:
        # Inside the insert's transaction, locked: a project deleted between a separate
        # check and the insert would make the foreign key refuse it (INTERNAL).
        one_of_team(PROJECT_LOCK, team_id, project_id, "project")
        if assigned_agent_id:
            _require_agent(team_id, assigned_agent_id)
        task = Task(
            id=new_id(),
            team=team_id,
            project=project_id,
            title=title,
            description=description,
            status=TODO,
            priority=priority,
            assigned_agent=assigned_agent_id or None,
            due_time=due_time,
            max_attempts=max_attempts,
        )
        return save_with_events(task, [CREATED], caller, created=True)

    digest = request_id and idempotency.fingerprint(
        project_id=project_id,
        title=title,
        description=description,
        assigned_agent_id=assigned_agent_id,
        priority=priority,
        due_time=due_time,
        max_attempts=max_attempts,
    )

    return idempotency.once(
        team_id,
        "CreateTask",
        request_id,
        insert,
        lambda task: task.id,
        lambda task_id: _load(team_id, task_id),
        digest,
    )


def update_task(caller: Caller, task_id: str, changes: dict[str, Any], etag: str) -> Task:
    """Writes the fields in `changes`; the status is never changed here."""
    unknown_fields(changes, WRITABLE)
    checks = Checks()
    checks.required("task.id", task_id)
    if "title" in changes:
        changes["title"] = checks.name("task.title", changes["title"], TITLE_MAX)
    if "description" in changes:
        checks.text("task.description", changes["description"], DESCRIPTION_MAX)
    if "priority" in changes:
        _check_priority(checks, "task.priority", changes["priority"])
    if "max_attempts" in changes:
        checks.whole("task.max_attempts", changes["max_attempts"], 0, MAX_ATTEMPTS_MAX)
    if "project_id" in changes and not changes["project_id"]:
        checks.fail("task.project_id", "must not be empty: every task belongs to a project")
    checks.done()
    team_id = caller.team_id
    with write_transaction():
        task = _lock(team_id, task_id)
        if changes.get("project_id"):
            _require_project(team_id, changes["project_id"])
        new_assignee = changes.get("assigned_agent_id") or None
        if new_assignee:
            _require_agent(team_id, new_assignee)
        _check_etag(task, etag)
        reassigning = "assigned_agent_id" in changes and new_assignee != task.assigned_agent_id
        if reassigning and task.status != TODO:
            raise InvalidTransition("assigned_agent_id can change only while the task is todo")
        if not changes:
            return task
        for field, value in changes.items():
            setattr(task, field, value if field != "assigned_agent_id" else new_assignee)
        return save_with_events(task, [UPDATED], caller)


def _check_etag(task: Task, etag: str) -> None:
    if etag and etag != etag_of(task):
        raise EtagMismatch()


# --- lifecycle -----------------------------------------------------------------------------


def _claimant(caller: Caller, agent_id: str, checks: Checks) -> str:
    """The agent a claim is for: the calling agent, or the one a Team API Key names.

    Naming another agent with an Agent Token is refused at once (permissions come before
    validation); a Team API Key naming nobody is a violation added to `checks`."""
    if caller.is_agent:
        if agent_id and agent_id != caller.agent_id:
            raise Forbidden("Agent tokens cannot claim tasks for another agent")
        assert caller.agent_id is not None
        return caller.agent_id
    if not agent_id:
        checks.fail("agent_id", "is required when a Team API Key claims a task")
    return agent_id


_DEFAULT_LEASE: Statement[Team] = Statement(
    lambda: Team.select(Team.default_lease_us).where(Team.id == Param("team"))
)


def _lease_us(team_id: str, lease_us: int | None) -> int | None:
    """The lease a claim gets: the one asked for, else the team's default (None: no lease)."""
    if lease_us is None:
        lease_us = _DEFAULT_LEASE.scalar(team=team_id)
    return lease_us or None


def _require_active(agent_id: str) -> None:
    """Refuses to start a task for an inactive agent; locks the agent row (see lock_agent).

    Taken only right before starting, after the task's state checks: a claim that returns
    early never waits on an agent being deactivated (which may be waiting on that task).
    """
    agent = lock_agent(agent_id)
    if agent is None or agent.status != "active":
        raise TaskNotClaimable("The agent is inactive")


def _start(task: Task, agent_id: str, lease_us: int | None) -> None:
    task.status = IN_PROGRESS
    task.assigned_agent_id = agent_id
    task.lease_us = lease_us
    task.lease_expire_at = now_us() + lease_us if lease_us else None


def claim_task(caller: Caller, task_id: str, agent_id: str, lease_us: int | None) -> Task:
    """todo -> in_progress for the claimant, atomically; a second claimer always loses."""
    checks = Checks()
    claimant = _claimant(caller, agent_id, checks)
    checks.required("task_id", task_id)
    checks.duration("lease_duration", lease_us, MAX_LEASE_US)
    checks.done()
    team_id = caller.team_id
    with write_transaction():
        task = _lock(team_id, task_id)
        if not caller.is_agent:  # an Agent Token's own agent was found when it authenticated
            _require_agent(team_id, claimant)
        if task.status == IN_PROGRESS:
            if task.assigned_agent_id == claimant:
                return task
            raise TaskAlreadyClaimed()
        if task.status != TODO:
            raise TaskNotClaimable(f"Task is {task.status} and cannot be claimed")
        if task.assigned_agent_id not in (None, claimant):
            raise TaskNotClaimable("Task is assigned to another agent")
        _require_active(claimant)
        _start(task, claimant, _lease_us(team_id, lease_us))
        return save_with_events(task, [CLAIMED], caller)


MAX_WAIT_US = 60 * MICROS  # as SQS refuses a long poll over its maximum


def claim_next_task(
    caller: Caller,
    agent_id: str,
    project_id: str = "",
    priority: int = 0,
    lease_us: int | None = None,
    wait_us: int | None = None,
) -> Task | None:
    """Claims the best todo task for the claimant, or None: high before low, then oldest.

    Only tasks unassigned or assigned to the claimant qualify. Rows other transactions hold
    are skipped (PostgreSQL), so concurrent callers never queue behind one task. `wait_us`
    is only validated here: the transport waits between attempts.
    """
    checks = Checks()
    claimant = _claimant(caller, agent_id, checks)
    if priority:
        _check_priority(checks, "priority", priority)
    checks.duration("lease_duration", lease_us, MAX_LEASE_US)
    checks.duration("wait", wait_us, MAX_WAIT_US)
    checks.done()
    team_id = caller.team_id
    if project_id and not could_be_id(project_id):
        return None
    with write_transaction():
        if not caller.is_agent:
            _require_agent(team_id, claimant)
        # Leases that ran out make their tasks todo first, so the pick sees them.
        leases.expire_due_leases(now_us(), team_id=team_id)
        task = pick_next(team_id, claimant, project_id, priority)
        if task is None:
            return None
        _require_active(claimant)
        _start(task, claimant, _lease_us(team_id, lease_us))
        return save_with_events(task, [CLAIMED], caller)


_NEXT_LEASE_END: Statement[Task] = Statement(
    lambda: Task.select(fn.MIN(Task.lease_expire_at)).where(
        (Task.team == Param("team"))
        & (Task.status == IN_PROGRESS)
        & Task.lease_expire_at.is_null(False)  # MIN skips nulls; the lease index has none
    )
)


def next_lease_end(team_id: str) -> int | None:
    """When the team's next lease runs out (µs), or None: a claim waiter wakes then."""
    return _NEXT_LEASE_END.scalar(team=team_id)


def pick_next(team_id: str, claimant: str, project_id: str, priority: int) -> Task | None:
    """The best todo task for the claimant, locked."""
    statement = pick_statement(bool(project_id), bool(priority))
    return statement.first(team=team_id, agent=claimant, project=project_id, priority=priority)


@cache
def pick_statement(by_project: bool, by_priority: bool) -> Statement[Task]:
    """`pick_query`, locking, built once per shape. Parameters: team, agent, and the
    project and priority it is narrowed by."""
    project = Param("project") if by_project else ""
    priority = Param("priority") if by_priority else 0
    return Statement(
        lambda: skip_locked(pick_query(Param("team"), Param("agent"), project, priority))
    )


def pick_query(team_id: Any, claimant: Any, project_id: Any, priority: Any):
    """ClaimNextTask's selection, best first (index task_pick_next backs its order)."""
    query = Task.select().where(
        (Task.team == team_id)
        & (Task.status == TODO)
        & (Task.assigned_agent.is_null() | (Task.assigned_agent == claimant))
    )
    if project_id:
        query = query.where(Task.project == project_id)
    if priority:
        query = query.where(Task.priority == priority)
    return query.order_by(Task.priority.desc(), Task.created_at, Task.seq).limit(1)


def complete_task(caller: Caller, task_id: str, result: str, request_id: str = "") -> Task:
    """in_progress -> done with `result`; only the assignee or a Team API Key."""
    checks = Checks()
    checks.required("task_id", task_id)
    checks.utf8("result", result, RESULT_MAX_BYTES)
    checks.request_id(request_id)
    checks.done()
    if not could_be_id(task_id):  # before the request_id lookup, whose scope holds it
        raise NotFound.of("task", task_id)
    team_id = caller.team_id
    # Scoped by task: a client that reuses a request_id for another task means another
    # completion, not a retry; a team-wide key would answer it with the first task.
    scope = f"CompleteTask:{task_id}"
    digest = request_id and idempotency.fingerprint(result=result)

    def complete() -> Task:
        task = _lock(team_id, task_id)
        if task.status != IN_PROGRESS:
            # A retry sent while its first attempt was still running waited here for that
            # attempt's lock: the task is now done by the very same request, so it is
            # answered as a retry (once() then replays it) rather than as a conflict.
            if request_id and idempotency.remembered(team_id, scope, request_id, digest) == task.id:
                return task
            raise TaskNotInProgress(f"Task is {task.status}, not in_progress")
        if caller.is_agent and task.assigned_agent_id != caller.agent_id:
            raise NotAssignedAgent()
        task.status = DONE
        task.result = result
        clear_lease(task)
        return save_with_events(task, [COMPLETED], caller)

    return idempotency.once(
        team_id,
        scope,
        request_id,
        complete,
        lambda task: task.id,
        lambda done_id: _load(team_id, done_id),
        digest,
    )


def heartbeat_task(caller: Caller, task_id: str, lease_us: int | None, progress: str) -> Task:
    """Extends the lease of an in-progress task and records `progress` (empty: kept).

    The new lease runs `lease_us` from now, or the claim's lease when unset or 0; a task
    claimed without a lease keeps none. Only the assignee or a Team API Key. A heartbeat
    is not an event: it would flood watchers and webhooks; it does change the etag.
    """
    checks = Checks()
    checks.required("task_id", task_id)
    checks.duration("lease_duration", lease_us, MAX_LEASE_US)
    checks.text("progress", progress, PROGRESS_MAX)
    checks.done()
    with write_transaction():
        task = _lock(caller.team_id, task_id)
        if task.status != IN_PROGRESS:
            raise TaskNotInProgress(f"Task is {task.status}, not in_progress")
        if caller.is_agent and task.assigned_agent_id != caller.agent_id:
            raise NotAssignedAgent()
        lease = lease_us or task.lease_us
        if lease:
            task.lease_us = lease
            task.lease_expire_at = now_us() + lease
        if progress:
            task.progress = progress
        return save_with_events(task, [], caller)


def move_task(caller: Caller, task_id: str, status: str, etag: str = "") -> Task:
    """Moves along MOVES; see the proto for who may move what."""
    checks = Checks()
    checks.required("task_id", task_id)
    if status not in MOVES:
        checks.fail("status", "must be a task status")
    checks.done()
    with write_transaction():
        task = _lock(caller.team_id, task_id)
        _check_etag(task, etag)
        if status == task.status:
            return task
        if status not in MOVES[task.status]:
            raise InvalidTransition(f"Cannot move a task from {task.status} to {status}")
        if caller.is_agent and task.assigned_agent_id not in (None, caller.agent_id):
            raise NotAssignedAgent()
        events = [MOVED]
        if status == TODO:
            task.status = TODO
            task.assigned_agent = None
            clear_lease(task)
        elif status == IN_PROGRESS:
            if task.assigned_agent_id is None and not caller.is_agent:
                raise ValidationError.field(
                    "status", "a Team API Key starts a task with ClaimTask and agent_id"
                )
            agent_id = task.assigned_agent_id or caller.agent_id
            assert agent_id is not None
            _require_active(agent_id)
            _start(task, agent_id, _lease_us(task.team_id, None))
        else:
            task.status = status
            clear_lease(task)
            events.append(COMPLETED if status == DONE else CANCELLED_EVENT)
        return save_with_events(task, events, caller)
