"""WebhookService: requests to domain calls to responses."""

from __future__ import annotations

from google.protobuf import duration_pb2

from agenttasks.v1 import webhooks_pb2 as pb
from agenttasks.v1 import webhooks_pb2_grpc

from ..domain import webhooks
from ..storage import models
from . import convert
from .door import current_caller

WRITABLE = {
    "url": lambda m: {"url": m.url},
    "events": lambda m: {"events": list(m.events)},
    "description": lambda m: {"description": m.description},
    "active": lambda m: {"active": m.active},
}
STATUSES = {
    pb.WEBHOOK_DELIVERY_STATUS_PENDING: webhooks.PENDING,
    pb.WEBHOOK_DELIVERY_STATUS_SUCCEEDED: webhooks.SUCCEEDED,
    pb.WEBHOOK_DELIVERY_STATUS_FAILED: webhooks.FAILED,
}
STATUS_NUMBERS = {name: number for number, name in STATUSES.items()}


def webhook(row: models.Webhook) -> pb.Webhook:
    return pb.Webhook(
        id=row.id,
        team_id=row.team_id,
        url=row.url,
        events=webhooks.event_names(row),
        description=row.description,
        active=row.active,
        disabled_reason=row.disabled_reason,
        created_at=convert.timestamp(row.created_at),
        updated_at=convert.timestamp(row.updated_at),
    )


def _attempt(row: models.WebhookAttempt) -> pb.WebhookDeliveryAttempt:
    duration = duration_pb2.Duration()
    duration.FromMicroseconds(row.duration_us)
    return pb.WebhookDeliveryAttempt(
        time=convert.timestamp(row.started_at),
        status_code=row.status_code,
        duration=duration,
        error=row.error,
        response_body=row.response_body,
    )


def delivery(item: webhooks.Delivery) -> pb.WebhookDelivery:
    row = item.row
    return pb.WebhookDelivery(
        id=row.id,
        webhook_id=row.webhook_id,
        event=row.event,
        status=STATUS_NUMBERS[row.status],
        attempts=[_attempt(attempt) for attempt in item.attempts],
        next_attempt_time=convert.timestamp(
            row.next_attempt_at if row.status == webhooks.PENDING else None
        ),
        created_at=convert.timestamp(row.created_at),
        payload=row.payload,
    )


class WebhookServicer(webhooks_pb2_grpc.WebhookServiceServicer):
    def __init__(self, allow_private: bool = False) -> None:
        self.allow_private = allow_private

    def CreateWebhook(self, request, context):
        row, secret = webhooks.create_webhook(
            current_caller(),
            request.team_id,
            request.url,
            list(request.events),
            request.description,
            request.request_id,
            self.allow_private,
        )
        return pb.CreateWebhookResponse(webhook=webhook(row), secret=secret)

    def ListWebhooks(self, request, context):
        rows, next_page = webhooks.list_webhooks(
            current_caller(), request.team_id, request.page_size, request.page_token
        )
        return pb.ListWebhooksResponse(
            webhooks=[webhook(row) for row in rows], next_page_token=next_page
        )

    def GetWebhook(self, request, context):
        row = webhooks.get_webhook(current_caller(), request.webhook_id)
        return pb.GetWebhookResponse(webhook=webhook(row))

    def UpdateWebhook(self, request, context):
        changes = convert.changes_from(request.webhook, request.update_mask, WRITABLE)
        row = webhooks.update_webhook(
            current_caller(), request.webhook.id, changes, self.allow_private
        )
        return pb.UpdateWebhookResponse(webhook=webhook(row))

    def DeleteWebhook(self, request, context):
        webhooks.delete_webhook(current_caller(), request.webhook_id)
        return pb.DeleteWebhookResponse()

    def RotateWebhookSecret(self, request, context):
        grace = convert.micros_of(request, "grace_period")
        row, secret = webhooks.rotate_secret(current_caller(), request.webhook_id, grace)
        return pb.RotateWebhookSecretResponse(webhook=webhook(row), secret=secret)

    def ListWebhookDeliveries(self, request, context):
        items, next_page = webhooks.list_deliveries(
            current_caller(),
            request.webhook_id,
            convert.enum_value(STATUSES, "status", request.status),
            request.page_size,
            request.page_token,
        )
        return pb.ListWebhookDeliveriesResponse(
            deliveries=[delivery(item) for item in items], next_page_token=next_page
        )

    def RedeliverWebhookDelivery(self, request, context):
        item = webhooks.redeliver(current_caller(), request.delivery_id)
        return pb.RedeliverWebhookDeliveryResponse(delivery=delivery(item))

    def TestWebhook(self, request, context):
        item = webhooks.test_webhook(current_caller(), request.webhook_id)
        return pb.TestWebhookResponse(delivery=delivery(item))
