"""Agents: the team's workers, each with its own token (shown once)."""

from __future__ import annotations

from typing import Any

import peewee as pw

from ..storage.db import write_transaction
from ..storage.models import Agent, Task
from . import idempotency, tokens
from .lifecycle import OPEN_STATUSES, release_tasks_of_agent
from .lookup import by_id_in_team, one_of_team
from .pagination import paginate, parse_page
from .validation import MAX_GRACE_US, Checks, unknown_fields
from .values import Caller, TokenKind, new_id, now_us, own_team

ACTIVE, INACTIVE = "active", "inactive"
WRITABLE = {"name", "description", "status"}


def _with_task_count() -> pw.ModelSelect[Agent]:
    task_count = (
        Task.select(pw.fn.COUNT(Task.seq))
        .where((Task.assigned_agent == Agent.id) & Task.status.in_(OPEN_STATUSES))
        .alias("task_count")
    )
    return Agent.select(Agent, task_count)


_AGENT = by_id_in_team(_with_task_count)


def _load(team_id: str, agent_id: str) -> Agent:
    return one_of_team(_AGENT, team_id, agent_id, "agent")


def list_agents(
    caller: Caller, team_id: str, status: str | None, page_size: int, page_token: str
) -> tuple[list[Agent], str]:
    team_id = own_team(caller, team_id)
    page = parse_page(page_size, page_token, ("agents", team_id, status))
    query = _with_task_count().where(Agent.team == team_id)
    if status:
        query = query.where(Agent.status == status)
    return paginate(query, Agent, page)


def get_agent(caller: Caller, agent_id: str) -> Agent:
    checks = Checks()
    checks.required("agent_id", agent_id)
    checks.done()
    return _load(caller.team_id, agent_id)


def create_agent(
    caller: Caller, team_id: str, name: str, description: str, request_id: str
) -> tuple[Agent, str]:
    """Returns the agent and its token; a replayed `request_id` returns an empty token."""
    team_id = own_team(caller, team_id)
    checks = Checks()
    name = checks.name("name", name)
    description = checks.text("description", description)
    request_id = checks.request_id(request_id)
    checks.done()

    def insert() -> tuple[Agent, str]:
        now = now_us()
        agent = Agent.create(
            id=new_id(),
            team=team_id,
            name=name,
            description=description,
            status=ACTIVE,
            created_at=now,
            updated_at=now,
        )
        agent.task_count = 0
        return agent, tokens.issue(team_id, TokenKind.AGENT, agent.id)

    return idempotency.once(
        team_id,
        "CreateAgent",
        request_id,
        insert,
        lambda created: created[0].id,
        lambda agent_id: (_load(team_id, agent_id), ""),
        idempotency.fingerprint(name=name, description=description),
    )


def update_agent(caller: Caller, agent_id: str, changes: dict[str, Any]) -> tuple[Agent, str]:
    """Writes name/description/status. Deactivating stops the token and releases the
    agent's in-progress tasks; reactivating returns a new token (else the token is "")."""
    unknown_fields(changes, WRITABLE)
    checks = Checks()
    checks.required("agent.id", agent_id)
    if "name" in changes:
        changes["name"] = checks.name("agent.name", changes["name"])
    if "description" in changes:
        checks.text("agent.description", changes["description"])
    if "status" in changes and changes["status"] not in (ACTIVE, INACTIVE):
        checks.fail("agent.status", "must be AGENT_STATUS_ACTIVE or AGENT_STATUS_INACTIVE")
    checks.done()
    token = ""
    with write_transaction():
        agent = _load(caller.team_id, agent_id)
        new_status = changes.get("status", agent.status)
        if new_status != agent.status:
            if new_status == INACTIVE:
                tokens.retire(tokens.agent_tokens(agent.id))
                release_tasks_of_agent(agent.id, actor=caller)
            else:
                token = tokens.issue(agent.team_id, TokenKind.AGENT, agent.id)
        if changes:
            changes["updated_at"] = now_us()
            Agent.update(changes).where(Agent.id == agent.id).execute()
            tokens.forget_resolved()  # its name rides along with each resolved token
    return _load(caller.team_id, agent_id), token


def rotate_agent_token(caller: Caller, agent_id: str, grace_us: int) -> tuple[Agent, str]:
    checks = Checks()
    checks.required("agent_id", agent_id)
    checks.duration("grace_period", grace_us, MAX_GRACE_US)
    checks.done()
    with write_transaction():
        agent = _load(caller.team_id, agent_id)
        tokens.retire(tokens.agent_tokens(agent.id), grace_us)
        token = tokens.issue(agent.team_id, TokenKind.AGENT, agent.id)
    return agent, token


def revoke_agent_token(caller: Caller, agent_id: str) -> Agent:
    checks = Checks()
    checks.required("agent_id", agent_id)
    checks.done()
    with write_transaction():
        agent = _load(caller.team_id, agent_id)
        tokens.retire(tokens.agent_tokens(agent.id))
    return agent
