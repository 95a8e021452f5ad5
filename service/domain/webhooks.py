"""Webhooks: a team's endpoints, their secrets, and the delivery log they are managed by."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from ..storage.db import for_update, write_transaction
from ..storage.models import Webhook, WebhookAttempt, WebhookCursor, WebhookDelivery
from ..webhooks import signing, ssrf
from . import events, idempotency
from .errors import NotFound
from .lifecycle import EVENT_NAMES
from .lookup import by_id_in_team, one_of_team
from .pagination import paginate, parse_page
from .validation import Checks, unknown_fields
from .values import MICROS, Caller, new_id, now_us, own_team

PING = "ping"
PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"
URL_MAX = 2000
WRITABLE = {"url", "events", "description", "active"}
# How long a rotated-away secret keeps signing when the request names no grace period.
DEFAULT_SECRET_GRACE_US = 24 * 3600 * MICROS
MAX_SECRET_GRACE_US = 7 * 24 * 3600 * MICROS


@dataclass(frozen=True)
class Delivery:
    """A delivery with its attempts, oldest first."""

    row: WebhookDelivery
    attempts: list[WebhookAttempt]


def event_names(webhook: Webhook) -> list[str]:
    return webhook.events.split(",") if webhook.events else []


def wants(webhook: Webhook, event: str) -> bool:
    """Whether the endpoint's filter lets `event` through (an empty filter: every event)."""
    return not webhook.events or event in webhook.events.split(",")


def _check_url(checks: Checks, field: str, url: str, allow_private: bool) -> str:
    url = url.strip()
    if not url:
        checks.fail(field, "is required")
    elif len(url) > URL_MAX:
        checks.fail(field, f"must be at most {URL_MAX:,} characters")
    else:
        try:
            ssrf.resolve(url, allow_private)
        except ssrf.Refused as refused:
            checks.fail(field, str(refused))
    return url


def _check_events(checks: Checks, field: str, names: list[str]) -> str:
    unknown = sorted(set(names) - set(EVENT_NAMES))
    if unknown:
        shown = ", ".join(repr(name[:100]) for name in unknown[:5])
        checks.fail(field, f"unknown event {shown}; known: {', '.join(EVENT_NAMES)}")
    return ",".join(name for name in EVENT_NAMES if name in names)


_WEBHOOK = by_id_in_team(Webhook.select)
_WEBHOOK_LOCKED = by_id_in_team(lambda: for_update(Webhook.select()))


def _load(team_id: str, webhook_id: str) -> Webhook:
    return one_of_team(_WEBHOOK, team_id, webhook_id, "Webhook")


def _start_cursor(team_id: str) -> int:
    """Makes sure the team's events are fanned out from now on; returns the newest event id.

    A team's first webhook (re)starts the cursor at its newest event, so events from before
    it had any endpoint are never replayed.
    """
    newest = events.last_event_id(team_id)
    has_others = Webhook.select().where(Webhook.team == team_id).exists()
    cursor = for_update(WebhookCursor.select().where(WebhookCursor.team == team_id)).first()
    if cursor is None:
        WebhookCursor.insert(team=team_id, last_event_id=newest).on_conflict_ignore().execute()
    elif not has_others:
        cursor.last_event_id = newest
        cursor.save()
    return newest


def create_webhook(
    caller: Caller,
    team_id: str,
    url: str,
    names: list[str],
    description: str,
    request_id: str,
    allow_private: bool,
) -> tuple[Webhook, str]:
    """Returns the webhook and its secret; a replayed `request_id` returns an empty secret."""
    team_id = own_team(caller, team_id)
    checks = Checks()
    url = _check_url(checks, "url", url, allow_private)
    joined = _check_events(checks, "events", list(names))
    description = checks.text("description", description)
    request_id = checks.request_id(request_id)
    checks.done()

    def insert() -> tuple[Webhook, str]:
        now = now_us()
        secret = signing.new_secret()
        after = _start_cursor(team_id)
        webhook = Webhook.create(
            id=new_id(),
            team=team_id,
            url=url,
            events=joined,
            description=description,
            secret=secret,
            after_event_id=after,
            created_at=now,
            updated_at=now,
        )
        return webhook, secret

    return idempotency.once(
        team_id,
        "CreateWebhook",
        request_id,
        insert,
        lambda created: created[0].id,
        lambda webhook_id: (_load(team_id, webhook_id), ""),
    )


def list_webhooks(
    caller: Caller, team_id: str, page_size: int, page_token: str
) -> tuple[list[Webhook], str]:
    team_id = own_team(caller, team_id)
    page = parse_page(page_size, page_token, ("webhooks", team_id))
    return paginate(Webhook.select().where(Webhook.team == team_id), Webhook, page)


def _required(field: str, value: str) -> None:
    checks = Checks()
    checks.required(field, value)
    checks.done()


def get_webhook(caller: Caller, webhook_id: str) -> Webhook:
    _required("webhook_id", webhook_id)
    return _load(caller.team_id, webhook_id)


def fail_pending(webhook_id: str) -> None:
    """An endpoint that stops receiving: its pending deliveries end as failed."""
    (
        WebhookDelivery.update(status=FAILED, next_attempt_at=None, updated_at=now_us())
        .where((WebhookDelivery.webhook == webhook_id) & (WebhookDelivery.status == PENDING))
        .execute()
    )


def update_webhook(
    caller: Caller, webhook_id: str, changes: dict[str, Any], allow_private: bool
) -> Webhook:
    """Writes url/events/description/active. Deactivating fails the pending deliveries;
    activating clears the reason the server disabled it for."""
    unknown_fields(changes, WRITABLE)
    checks = Checks()
    checks.required("webhook.id", webhook_id)
    if "url" in changes:
        changes["url"] = _check_url(checks, "webhook.url", changes["url"], allow_private)
    if "events" in changes:
        changes["events"] = _check_events(checks, "webhook.events", changes["events"])
    if "description" in changes:
        checks.text("webhook.description", changes["description"])
    checks.done()
    with write_transaction():
        webhook = one_of_team(_WEBHOOK_LOCKED, caller.team_id, webhook_id, "Webhook")
        if "active" in changes and changes["active"] != webhook.active:
            if changes["active"]:
                changes.update(disabled_reason="", failing_since=None)
            else:
                fail_pending(webhook.id)
        if changes:
            changes["updated_at"] = now_us()
            Webhook.update(changes).where(Webhook.id == webhook.id).execute()
    return _load(caller.team_id, webhook_id)


def delete_webhook(caller: Caller, webhook_id: str) -> None:
    """Deletes the endpoint with its deliveries: pending ones are never sent."""
    _required("webhook_id", webhook_id)
    with write_transaction():
        webhook = _load(caller.team_id, webhook_id)
        webhook.delete_instance()  # deliveries and attempts cascade


def rotate_secret(caller: Caller, webhook_id: str, grace_us: int | None) -> tuple[Webhook, str]:
    """A new secret, returned once; the old one signs beside it for `grace_us` (default 24 h)."""
    checks = Checks()
    checks.required("webhook_id", webhook_id)
    checks.duration("grace_period", grace_us, MAX_SECRET_GRACE_US)
    checks.done()
    grace = DEFAULT_SECRET_GRACE_US if grace_us is None else grace_us
    with write_transaction():
        webhook = _load(caller.team_id, webhook_id)
        secret = signing.new_secret()
        now = now_us()
        webhook.previous_secret = webhook.secret if grace > 0 else None
        webhook.previous_secret_expires_at = now + grace if grace > 0 else None
        webhook.secret = secret
        webhook.updated_at = now
        webhook.save()
    return webhook, secret


def signing_secrets(webhook: Webhook, now: int) -> list[str]:
    """The secrets an attempt at `now` is signed with, newest first."""
    previous = webhook.previous_secret
    expires = webhook.previous_secret_expires_at
    if previous and expires is not None and expires > now:
        return [webhook.secret, previous]
    return [webhook.secret]


def _with_attempts(rows: list[WebhookDelivery]) -> list[Delivery]:
    attempts: dict[str, list[WebhookAttempt]] = {row.id: [] for row in rows}
    if rows:
        query = (
            WebhookAttempt.select()
            .where(WebhookAttempt.delivery.in_(list(attempts)))
            .order_by(WebhookAttempt.seq)
        )
        for attempt in query:
            attempts[attempt.delivery_id].append(attempt)
    return [Delivery(row, attempts[row.id]) for row in rows]


def list_deliveries(
    caller: Caller, webhook_id: str, status: str | None, page_size: int, page_token: str
) -> tuple[list[Delivery], str]:
    """The endpoint's deliveries, newest first, each with every attempt."""
    _required("webhook_id", webhook_id)
    page = parse_page(page_size, page_token, ("deliveries", webhook_id, status))
    webhook = _load(caller.team_id, webhook_id)
    query = WebhookDelivery.select().where(WebhookDelivery.webhook == webhook.id)
    if status:
        query = query.where(WebhookDelivery.status == status)
    rows, next_page = paginate(query, WebhookDelivery, page, newest_first=True)
    return _with_attempts(rows), next_page


def _load_delivery(team_id: str, delivery_id: str) -> WebhookDelivery:
    try:
        uuid.UUID(delivery_id)
    except ValueError:
        raise NotFound.of("Webhook delivery", delivery_id[:100]) from None
    row = (
        WebhookDelivery.select()
        .join(Webhook)
        .where((WebhookDelivery.id == delivery_id) & (Webhook.team == team_id))
        .first()
    )
    if row is None:
        raise NotFound.of("Webhook delivery", delivery_id)
    return row


def redeliver(caller: Caller, delivery_id: str) -> Delivery:
    """Queues the delivery again, now: same id and body, a fresh series of attempts.

    A delivery still pending is only made due at once. An inactive endpoint's delivery
    waits until the endpoint is active again.
    """
    _required("delivery_id", delivery_id)
    with write_transaction():
        row = _load_delivery(caller.team_id, delivery_id)
        now = now_us()
        (
            WebhookDelivery.update(
                status=PENDING,
                attempt_count=0,
                next_attempt_at=now,
                lease_until=None,
                lease_token=None,
                updated_at=now,
            )
            .where(WebhookDelivery.id == row.id)
            .execute()
        )
    return _with_attempts([_load_delivery(caller.team_id, delivery_id)])[0]


def new_delivery(
    webhook_id: str, event: str, event_id: int | None, body: dict[str, Any], now: int
) -> dict[str, Any]:
    """The values of a delivery row due at `now` (for `insert_many`)."""
    return {
        "id": str(uuid.uuid4()),
        "webhook": webhook_id,
        "event": event,
        "event_id": event_id,
        "payload": json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        "status": PENDING,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }


def test_webhook(caller: Caller, webhook_id: str) -> Delivery:
    """Queues a `ping` event to the endpoint, delivered like any other (its filter aside)."""
    _required("webhook_id", webhook_id)
    with write_transaction():
        webhook = _load(caller.team_id, webhook_id)
        now = now_us()
        body = {
            "event": PING,
            "timestamp": events.rfc3339(now),
            "teamId": webhook.team_id,
            "data": {"webhookId": webhook.id},
        }
        values = new_delivery(webhook.id, PING, None, body, now)
        WebhookDelivery.insert(values).execute()
    return _with_attempts([_load_delivery(caller.team_id, values["id"])])[0]
