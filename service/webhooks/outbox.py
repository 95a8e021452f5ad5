"""Fan-out: each team event becomes one delivery per matching endpoint, read by cursor.

The hot write path gains nothing: a dispatcher reads each team's events after its cursor
(the gap-free `events_after`) and writes the deliveries and the moved cursor in one
transaction, holding the cursor row (skip-locked), so one process fans out a team at a
time and no event is fanned out twice or missed.
"""

from __future__ import annotations

from ..domain import events
from ..domain.webhooks import new_delivery, wants
from ..storage import events as stored_events
from ..storage.db import skip_locked, write_transaction
from ..storage.models import Webhook, WebhookCursor, WebhookDelivery

EVENTS_PER_TEAM = 500  # events read per team and pass
TEAMS_PER_PASS = 50
_INSERT_CHUNK = 100


def fan_out(now: int) -> int:
    """Fans out the events of teams whose cursor is behind; returns how many events."""
    query = WebhookCursor.select(WebhookCursor.team, WebhookCursor.last_event_id).tuples()
    cursors: dict[str, int] = dict(query.iterator())
    if not cursors:
        return 0
    newest = stored_events.newest_of_teams(cursors)
    behind = [team for team, last in cursors.items() if newest.get(team, 0) > last]
    return sum(_fan_out_team(team, now) for team in behind[:TEAMS_PER_PASS])


def _fan_out_team(team_id: str, now: int) -> int:
    with write_transaction():
        query = WebhookCursor.select().where(WebhookCursor.team == team_id)
        cursor = skip_locked(query).first()
        if cursor is None:  # another process is fanning this team out right now
            return 0
        batch = events.events_after(team_id, cursor.last_event_id, EVENTS_PER_TEAM)
        if not batch:
            return 0
        hooks = list(Webhook.select().where((Webhook.team == team_id) & Webhook.active))
        rows = [
            new_delivery(hook.id, event.event, event.event_id, event.webhook_body(), now)
            for event in batch
            for hook in hooks
            if event.event_id > hook.after_event_id and wants(hook, event.event)
        ]
        for start in range(0, len(rows), _INSERT_CHUNK):
            WebhookDelivery.insert_many(rows[start : start + _INSERT_CHUNK]).execute()
        (
            WebhookCursor.update(last_event_id=batch[-1].event_id)
            .where(WebhookCursor.team == team_id)
            .execute()
        )
    return len(batch)
