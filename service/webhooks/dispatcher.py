"""The dispatcher job: fans events out, claims due deliveries, sends them, records attempts.

Claims are leases: a claimed delivery carries `lease_until` and a `lease_token`, written in
the claiming transaction (rows picked skip-locked), so however many processes dispatch,
each delivery is in one sender's hands at a time, and only the holder's result moves it
on; a succeeded delivery is never picked again. A process that dies mid-send leaves a lease
that runs out, and the delivery is sent again (at least once).

Sends run on a small thread pool and `run_once` never waits for them, so a slow or dead
receiver holds at most `per_endpoint` threads and never delays other endpoints.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from ..domain import events
from ..domain.values import MICROS, now_us
from ..domain.webhooks import FAILED, PENDING, SUCCEEDED, fail_pending, signing_secrets
from ..storage.db import connected, for_update, skip_locked, write_transaction
from ..storage.models import Webhook, WebhookAttempt, WebhookDelivery
from . import outbox, schedule, signing
from .http import TIMEOUT_S, Outcome

log = logging.getLogger("agenttasks.webhooks")

DISABLE_AFTER_S = 3 * 86400.0  # an endpoint failing this long is disabled
INTERVAL_S = 0.25
BATCH = 100
SENDERS = 16  # threads sending deliveries; each holds a database connection while it does


class Sender(Protocol):
    def send(self, url: str, headers: dict[str, str], body: bytes) -> Outcome: ...


class Dispatcher:
    """A Job's `run_once`: fan out, then hand due deliveries to the sending threads."""

    def __init__(
        self,
        sender: Sender,
        clock: Callable[[], int] = now_us,
        *,
        delays: Sequence[float] = schedule.RETRY_DELAYS,
        jitter: float = schedule.JITTER,
        disable_after_s: float = DISABLE_AFTER_S,
        concurrency: int = SENDERS,
        per_endpoint: int = 4,
        lease_s: float = 3 * TIMEOUT_S,
    ) -> None:
        self.sender = sender
        self.clock = clock
        self.delays = delays
        self.jitter = jitter
        self.disable_after_us = int(disable_after_s * MICROS)
        self.concurrency = concurrency
        self.per_endpoint = per_endpoint
        self.lease_us = int(lease_s * MICROS)
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="webhook-send")
        self._lock = threading.Lock()
        self._in_flight: Counter[str] = Counter()  # webhook id -> sends in hand

    def run_once(self, now: int) -> int:
        return outbox.fan_out(now) + self.dispatch(now)

    def close(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def idle(self) -> bool:
        with self._lock:
            return not +self._in_flight

    def dispatch(self, now: int) -> int:
        """Claims due deliveries up to the free sending slots; returns how many."""
        with self._lock:
            free = self.concurrency - sum(self._in_flight.values())
            busy = {hook: n for hook, n in self._in_flight.items() if n > 0}
        if free <= 0:
            return 0
        claimed = self._claim(now, min(free, BATCH), busy)
        with self._lock:
            for _, webhook_id, _ in claimed:
                self._in_flight[webhook_id] += 1
        for delivery_id, webhook_id, token in claimed:
            self._pool.submit(self._deliver, delivery_id, webhook_id, token)
        return len(claimed)

    def _claim(self, now: int, limit: int, busy: dict[str, int]) -> list[tuple[str, str, str]]:
        saturated = [hook for hook, n in busy.items() if n >= self.per_endpoint]
        active = Webhook.select(Webhook.id).where(Webhook.active)
        due = WebhookDelivery.select(WebhookDelivery.id, WebhookDelivery.webhook).where(
            (WebhookDelivery.status == PENDING)
            & (WebhookDelivery.next_attempt_at <= now)
            & (WebhookDelivery.lease_until.is_null() | (WebhookDelivery.lease_until < now))
            & WebhookDelivery.webhook.in_(active)
        )
        if saturated:
            due = due.where(WebhookDelivery.webhook.not_in(saturated))
        token = uuid.uuid4().hex
        with write_transaction():
            rows = list(skip_locked(due.order_by(WebhookDelivery.next_attempt_at).limit(limit)))
            taken: Counter[str] = Counter(busy)
            picked = []
            for row in rows:
                if taken[row.webhook_id] < self.per_endpoint:
                    taken[row.webhook_id] += 1
                    picked.append((row.id, row.webhook_id, token))
            if picked:
                (
                    WebhookDelivery.update(lease_until=now + self.lease_us, lease_token=token)
                    .where(WebhookDelivery.id.in_([p[0] for p in picked]))
                    .execute()
                )
        return picked

    def _deliver(self, delivery_id: str, webhook_id: str, token: str) -> None:
        try:
            with connected():
                self._attempt(delivery_id, webhook_id, token)
        except Exception:
            # The lease runs out and another pass tries again; never log the secret-bearing
            # headers, only what failed.
            log.exception("webhook delivery %s failed unexpectedly", delivery_id)
        finally:
            with self._lock:
                self._in_flight[webhook_id] -= 1

    def _attempt(self, delivery_id: str, webhook_id: str, token: str) -> None:
        delivery = WebhookDelivery.get_or_none(WebhookDelivery.id == delivery_id)
        webhook = Webhook.get_or_none(Webhook.id == webhook_id)
        if delivery is None or webhook is None or delivery.lease_token != token:
            return  # deleted, or redelivered since it was claimed
        started = self.clock()
        body = delivery.payload.encode()
        headers = signing.headers(
            signing_secrets(webhook, started),
            delivery.event,
            delivery.id,
            started // MICROS,
            body,
        )
        outcome = self.sender.send(webhook.url, headers, body)
        self._record(delivery_id, webhook_id, token, started, outcome)

    def _record(
        self, delivery_id: str, webhook_id: str, token: str, started: int, outcome: Outcome
    ) -> None:
        now = self.clock()
        with write_transaction():
            # Webhook row first, then the delivery: the order UpdateWebhook locks them in.
            webhook = for_update(Webhook.select().where(Webhook.id == webhook_id)).first()
            query = WebhookDelivery.select().where(WebhookDelivery.id == delivery_id)
            delivery = for_update(query).first()
            if webhook is None or delivery is None:
                return  # the endpoint was deleted meanwhile
            WebhookAttempt.create(
                delivery=delivery_id,
                started_at=started,
                status_code=outcome.status_code,
                duration_us=outcome.duration_us,
                error=outcome.error[:500],
                response_body=outcome.response_body,
            )
            if delivery.lease_token != token:
                return  # redelivered meanwhile: that series decides what happens next
            delivery.attempt_count += 1
            delivery.lease_until = delivery.lease_token = None
            delivery.updated_at = now
            if outcome.succeeded:
                delivery.status, delivery.next_attempt_at = SUCCEEDED, None
                if webhook.failing_since is not None:
                    webhook.failing_since = None
                    webhook.save()
            else:
                self._failed(webhook, delivery, outcome, started, now)
            delivery.save()

    def _failed(
        self,
        webhook: Webhook,
        delivery: WebhookDelivery,
        outcome: Outcome,
        started: int,
        now: int,
    ) -> None:
        if webhook.failing_since is None:
            webhook.failing_since = started
            webhook.save()
        reason = ""
        if outcome.status_code == 410:
            reason = "the endpoint answered 410 Gone"
        elif now - webhook.failing_since >= self.disable_after_us:
            since = events.rfc3339(webhook.failing_since)
            reason = f"every attempt failed since {since}; the last: {outcome.error}"[:500]
        delay = schedule.next_delay(delivery.attempt_count, self.delays, self.jitter)
        if reason:
            webhook.active, webhook.disabled_reason, webhook.updated_at = False, reason, now
            webhook.save()
            fail_pending(webhook.id)
            log.warning("webhook %s disabled: %s", webhook.id, reason)
        if reason or delay is None:
            delivery.status, delivery.next_attempt_at = FAILED, None
        else:
            delivery.next_attempt_at = now + int(delay * MICROS)
