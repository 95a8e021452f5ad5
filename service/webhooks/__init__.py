"""Webhook delivery: outbox fan-out, the dispatcher, signing, the SSRF guard, the HTTP sender."""
