"""Webhook secrets and signatures: the AgentTasks HMAC header and Standard Webhooks' one.

A secret is `whsec_` + base64 of 32 random bytes, the Standard Webhooks format:
- `X-AgentTasks-Signature: sha256=<hex>`: HMAC-SHA256 of the body bytes, keyed with the
  whole secret string (UTF-8), as the AgentTasks REST docs sign;
- `webhook-signature: v1,<base64>`: HMAC-SHA256 of `id.timestamp.body`, keyed with the
  base64-decoded part after `whsec_`, as every Standard Webhooks library verifies.
While a rotated-away secret is in its grace period each header carries one signature per
secret, newest first (comma-separated for ours, space-separated as Standard Webhooks says).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

PREFIX = "whsec_"


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def agenttasks_signature(secret: str, body: bytes) -> str:
    """`sha256=<hex>` for one secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def standard_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64>` for one secret."""
    key = base64.b64decode(secret.removeprefix(PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(
    secrets_: Sequence[str], event: str, delivery_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Every header of one attempt; `timestamp` is the attempt's time in Unix seconds."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "AgentTasks-Webhooks/1",
        "X-AgentTasks-Event": event,
        "X-AgentTasks-Delivery": delivery_id,
        "X-AgentTasks-Signature": ",".join(agenttasks_signature(s, body) for s in secrets_),
        "webhook-id": delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            standard_signature(s, delivery_id, timestamp, body) for s in secrets_
        ),
    }
