"""WebhookService and delivery over a real channel, to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from standardwebhooks.webhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError

from agenttasks.server.ratelimit import RateLimits
from agenttasks.server.webhooks.dispatcher import Dispatcher
from agenttasks.server.webhooks.http import HttpSender
from agenttasks.server.workers import Job, Runner
from agenttasks.v1 import tasks_pb2
from agenttasks.v1 import webhooks_pb2 as pb

from .conftest import new_team, start_server
from .helpers import raises
from .webhook_receiver import Receiver, wait_until

TASK_KEYS = [
    "id",
    "title",
    "description",
    "status",
    "priority",
    "result",
    "assignedAgentId",
    "projectId",
    "createdAt",
    "updatedAt",
]


@pytest.fixture(scope="module")
def hooks_channel(database_url):
    """A server that lets webhooks target 127.0.0.1 (as `--allow-private-webhooks`)."""
    running = start_server(rate_limits=RateLimits(0, 0, 0), allow_private_webhooks=True)
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield channel
    running.stop(0)


@pytest.fixture
def team(hooks_channel):
    return new_team(hooks_channel, "Hooks")


@pytest.fixture
def receiver():
    made = Receiver()
    yield made
    made.close()


@pytest.fixture
def dispatch():
    """Starts dispatchers with a short retry schedule (no real backoff is slept through)."""
    started: list[tuple[Runner, Dispatcher]] = []

    def start(delays=(0.05,) * 6, timeout=10.0, allow_private=True, **options) -> Dispatcher:
        dispatcher = Dispatcher(
            HttpSender(allow_private=allow_private, timeout=timeout),
            delays=delays,
            jitter=0,
            **options,
        )
        runner = Runner([Job("webhook-dispatcher", dispatcher.run_once, 0.02, 100)]).start()
        started.append((runner, dispatcher))
        return dispatcher

    yield start
    for runner, dispatcher in started:
        runner.stop(5)
        dispatcher.close(wait=False)


def create(team, url, events=(), description="") -> pb.CreateWebhookResponse:
    return team.admin.webhooks.CreateWebhook(
        pb.CreateWebhookRequest(url=url, events=list(events), description=description)
    )


def deliveries(team, webhook_id, status=0) -> list[pb.WebhookDelivery]:
    return list(
        team.admin.webhooks.ListWebhookDeliveries(
            pb.ListWebhookDeliveriesRequest(webhook_id=webhook_id, status=status)
        ).deliveries
    )


def new_task(team, project_id, title="Write the report"):
    return team.admin.tasks.CreateTask(
        tasks_pb2.CreateTaskRequest(project_id=project_id, title=title)
    ).task


def hmac_recipe_accepts(secret: str, body: bytes, header: str) -> bool:
    """The docs' recipe: HMAC-SHA256 of the raw body, keyed with the secret string."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, given.strip()) for given in header.split(","))


def standard_accepts(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    try:
        StandardWebhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


# --- managing endpoints ----------------------------------------------------------------------


def test_create_shows_the_secret_once_then_get_list_update_delete(team, receiver):
    created = create(team, receiver.url, ["task.created"], "CI hook")
    assert created.secret.startswith("whsec_") and len(created.secret) > 40
    hook = created.webhook
    assert (hook.url, list(hook.events), hook.description, hook.active) == (
        receiver.url,
        ["task.created"],
        "CI hook",
        True,
    )
    got = team.admin.webhooks.GetWebhook(pb.GetWebhookRequest(webhook_id=hook.id))
    assert got.webhook == hook and created.secret not in str(got)
    listed = team.admin.webhooks.ListWebhooks(pb.ListWebhooksRequest()).webhooks
    assert [w.id for w in listed] == [hook.id]
    updated = team.admin.webhooks.UpdateWebhook(
        pb.UpdateWebhookRequest(
            webhook=pb.Webhook(id=hook.id, events=[], description="all", active=False),
            update_mask=field_mask_pb2.FieldMask(paths=["events", "description", "active"]),
        )
    ).webhook
    assert (list(updated.events), updated.description, updated.active) == ([], "all", False)
    team.admin.webhooks.DeleteWebhook(pb.DeleteWebhookRequest(webhook_id=hook.id))
    raises("NOT_FOUND", team.admin.webhooks.GetWebhook, pb.GetWebhookRequest(webhook_id=hook.id))


def test_create_validates_url_and_events(team):
    body = raises(
        "VALIDATION_ERROR",
        team.admin.webhooks.CreateWebhook,
        pb.CreateWebhookRequest(url="ftp://example.com/x", events=["task.exploded"]),
    )
    assert body.violations == ["url", "events"]


def test_another_teams_webhook_is_not_found(team, receiver, hooks_channel):
    hook = create(team, receiver.url).webhook
    other = new_team(hooks_channel, "Other")
    raises("NOT_FOUND", other.admin.webhooks.GetWebhook, pb.GetWebhookRequest(webhook_id=hook.id))
    raises(
        "NOT_FOUND",
        other.admin.webhooks.RedeliverWebhookDelivery,
        pb.RedeliverWebhookDeliveryRequest(delivery_id=str(uuid.uuid4())),
    )


# --- the SSRF guard --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/hook",
        "http://localhost/hook",
        "https://192.168.0.10/hook",
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
        "http://[::ffff:127.0.0.1]/hook",
    ],
)
def test_private_addresses_are_refused_without_the_flag(world, url):
    body = raises(
        "VALIDATION_ERROR", world.admin.webhooks.CreateWebhook, pb.CreateWebhookRequest(url=url)
    )
    assert body.violations == ["url"]


def test_update_to_a_private_address_is_refused_without_the_flag(world, team, receiver):
    hook = create(team, receiver.url).webhook
    # The same row, reached through the server without the flag.
    admin = world.client(team.key).webhooks
    body = raises(
        "VALIDATION_ERROR",
        admin.UpdateWebhook,
        pb.UpdateWebhookRequest(webhook=pb.Webhook(id=hook.id, url="http://localhost:1/x")),
    )
    assert body.violations == ["webhook.url"]


def test_delivery_checks_the_address_again(team, receiver, dispatch):
    hook = create(team, receiver.url).webhook
    dispatch(allow_private=False)
    team.admin.webhooks.TestWebhook(pb.TestWebhookRequest(webhook_id=hook.id))
    attempts = wait_until(lambda: deliveries(team, hook.id)[0].attempts)
    assert attempts[0].status_code == 0 and attempts[0].error.startswith("refused")
    assert receiver.received() == []


# --- what is delivered -----------------------------------------------------------------------


def test_every_event_type_arrives_with_the_documented_body_headers_and_signatures(
    team, receiver, dispatch
):
    created = create(team, receiver.url)
    secret = created.secret
    dispatch()
    project = team.project()
    agent, agent_client = team.agent("worker")
    task = new_task(team, project.id)
    team.admin.tasks.UpdateTask(
        tasks_pb2.UpdateTaskRequest(task=tasks_pb2.Task(id=task.id, description="more"))
    )
    agent_client.tasks.ClaimTask(tasks_pb2.ClaimTaskRequest(task_id=task.id))
    agent_client.tasks.CompleteTask(tasks_pb2.CompleteTaskRequest(task_id=task.id, result="42"))
    team.admin.tasks.MoveTask(
        tasks_pb2.MoveTaskRequest(task_id=task.id, status=tasks_pb2.TASK_STATUS_TODO)
    )
    team.admin.tasks.MoveTask(
        tasks_pb2.MoveTaskRequest(task_id=task.id, status=tasks_pb2.TASK_STATUS_CANCELLED)
    )
    expected = [
        "task.created",
        "task.updated",
        "task.claimed",
        "task.completed",
        "task.moved",
        "task.moved",
        "task.cancelled",
    ]
    got = wait_until(lambda: len(receiver.received()) >= len(expected) and receiver.received())
    assert sorted(json.loads(r.body)["event"] for r in got) == sorted(expected)
    for request in got:
        body = json.loads(request.body)
        headers = request.headers
        assert list(body) == ["event", "timestamp", "teamId", "data"]
        assert body["teamId"] == team.id and body["timestamp"].endswith("Z")
        assert list(body["data"]["task"]) == TASK_KEYS
        assert body["data"]["task"]["id"] == task.id
        assert body["data"]["task"]["status"] in ("todo", "in_progress", "done", "cancelled")
        if body["event"] in ("task.claimed", "task.completed"):
            assert body["data"]["agent"] == {"id": agent.id, "name": "worker"}
        if body["event"] == "task.created":
            assert body["data"]["agent"] is None
            assert body["data"]["task"]["priority"] == "normal"
        assert headers["content-type"] == "application/json"
        assert headers["x-agenttasks-event"] == body["event"]
        delivery_id = headers["x-agenttasks-delivery"]
        assert uuid.UUID(delivery_id).version == 4 and headers["webhook-id"] == delivery_id
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
        assert headers["webhook-signature"].startswith("v1,")
        assert hmac_recipe_accepts(secret, request.body, headers["x-agenttasks-signature"])
        assert standard_accepts(secret, request.body, headers)
        changed = request.body.replace(b'"teamId"', b'"teamID"')
        assert not hmac_recipe_accepts(secret, changed, headers["x-agenttasks-signature"])
        assert not standard_accepts(secret, changed, headers)
    completed = next(json.loads(r.body) for r in got if b"task.completed" in r.body)
    assert completed["data"]["task"]["result"] == "42"


def test_events_before_the_first_webhook_are_not_replayed(team, receiver, dispatch):
    project = team.project()
    new_task(team, project.id, "before")
    hook = create(team, receiver.url).webhook
    dispatch()
    new_task(team, project.id, "after")
    wait_until(lambda: receiver.received())
    time.sleep(0.3)
    titles = [json.loads(r.body)["data"]["task"]["title"] for r in receiver.received()]
    assert titles == ["after"]
    assert len(deliveries(team, hook.id)) == 1


def test_event_filters_are_honoured_per_endpoint(team, dispatch):
    everything, claims_only = Receiver(), Receiver()
    try:
        create(team, everything.url)
        create(team, claims_only.url, ["task.claimed"])
        dispatch()
        project = team.project()
        _, agent = team.agent()
        task = new_task(team, project.id)
        agent.tasks.ClaimTask(tasks_pb2.ClaimTaskRequest(task_id=task.id))
        wait_until(lambda: len(everything.received()) == 2)
        wait_until(lambda: claims_only.received())
        time.sleep(0.3)
        assert [r.headers["x-agenttasks-event"] for r in claims_only.received()] == ["task.claimed"]
    finally:
        everything.close()
        claims_only.close()


def test_ping_is_delivered_like_any_other_event(team, receiver, dispatch):
    created = create(team, receiver.url, ["task.claimed"])
    dispatch()
    queued = team.admin.webhooks.TestWebhook(
        pb.TestWebhookRequest(webhook_id=created.webhook.id)
    ).delivery
    assert (queued.event, queued.status) == ("ping", pb.WEBHOOK_DELIVERY_STATUS_PENDING)
    (request,) = wait_until(lambda: receiver.received())
    assert json.loads(request.body) == json.loads(queued.payload)
    assert json.loads(request.body)["data"] == {"webhookId": created.webhook.id}
    assert request.headers["x-agenttasks-delivery"] == queued.id
    assert standard_accepts(created.secret, request.body, request.headers)


# --- failures and retries --------------------------------------------------------------------


def test_a_failing_receiver_gets_retries_with_the_same_delivery_id_until_it_succeeds(
    team, dispatch
):
    answers = iter([500, 500, 503])
    receiver = Receiver(lambda _: next(answers, 200))
    try:
        hook = create(team, receiver.url).webhook
        dispatch()
        team.admin.webhooks.TestWebhook(pb.TestWebhookRequest(webhook_id=hook.id))
        wait_until(lambda: len(receiver.received()) == 4)
        ids = {r.headers["x-agenttasks-delivery"] for r in receiver.received()}
        assert len(ids) == 1
        (delivery,) = wait_until(
            lambda: deliveries(team, hook.id, pb.WEBHOOK_DELIVERY_STATUS_SUCCEEDED)
        )
        assert delivery.id in ids
        assert [a.status_code for a in delivery.attempts] == [500, 500, 503, 200]
        assert [a.error for a in delivery.attempts] == ["HTTP 500", "HTTP 500", "HTTP 503", ""]
        assert all(a.duration.ToMicroseconds() > 0 for a in delivery.attempts)
        assert delivery.attempts[-1].response_body == "ok"
        assert not delivery.HasField("next_attempt_time")
    finally:
        receiver.close()


def test_a_receiver_that_was_down_gets_every_event_once_it_is_back(team, dispatch):
    receiver = Receiver()
    port = receiver.port
    hook = create(team, receiver.url).webhook
    receiver.close()
    dispatch(delays=(0.1,) * 30)
    project = team.project()
    for n in range(5):
        new_task(team, project.id, f"task {n}")
    wait_until(lambda: all(d.attempts for d in deliveries(team, hook.id)), timeout=5)
    back = Receiver(port=port)
    try:
        wait_until(lambda: len(back.received()) >= 5)
        wait_until(
            lambda: len(deliveries(team, hook.id, pb.WEBHOOK_DELIVERY_STATUS_SUCCEEDED)) == 5
        )
        titles = sorted(json.loads(r.body)["data"]["task"]["title"] for r in back.received())
        assert titles == [f"task {n}" for n in range(5)]
    finally:
        back.close()


def test_410_gone_disables_the_endpoint_at_once(team, dispatch):
    receiver = Receiver(lambda _: 410)
    try:
        hook = create(team, receiver.url).webhook
        dispatch()
        team.admin.webhooks.TestWebhook(pb.TestWebhookRequest(webhook_id=hook.id))
        (delivery,) = wait_until(
            lambda: deliveries(team, hook.id, pb.WEBHOOK_DELIVERY_STATUS_FAILED)
        )
        assert len(delivery.attempts) == 1
        got = team.admin.webhooks.GetWebhook(pb.GetWebhookRequest(webhook_id=hook.id)).webhook
        assert not got.active and "410" in got.disabled_reason
    finally:
        receiver.close()


def test_an_endpoint_failing_for_the_configured_span_is_disabled_with_a_reason(team, dispatch):
    receiver = Receiver(lambda _: 500)
    try:
        hook = create(team, receiver.url).webhook
        dispatch(disable_after_s=0.3)
        team.admin.webhooks.TestWebhook(pb.TestWebhookRequest(webhook_id=hook.id))
        got = wait_until(
            lambda: (
                (
                    w := team.admin.webhooks.GetWebhook(
                        pb.GetWebhookRequest(webhook_id=hook.id)
                    ).webhook
                )
                and not w.active
                and w
            )
        )
        assert "every attempt failed since" in got.disabled_reason
        assert "HTTP 500" in got.disabled_reason
        (delivery,) = deliveries(team, hook.id)
        assert delivery.status == pb.WEBHOOK_DELIVERY_STATUS_FAILED
        # Turning it back on clears the reason.
        again = team.admin.webhooks.UpdateWebhook(
            pb.UpdateWebhookRequest(webhook=pb.Webhook(id=hook.id, active=True))
        ).webhook
        assert again.active and again.disabled_reason == ""
    finally:
        receiver.close()


def test_redeliver_sends_the_same_delivery_again(team, receiver, dispatch):
    hook = create(team, receiver.url).webhook
    dispatch()
    queued = team.admin.webhooks.TestWebhook(pb.TestWebhookRequest(webhook_id=hook.id)).delivery
    wait_until(lambda: deliveries(team, hook.id, pb.WEBHOOK_DELIVERY_STATUS_SUCCEEDED))
    again = team.admin.webhooks.RedeliverWebhookDelivery(
        pb.RedeliverWebhookDeliveryRequest(delivery_id=queued.id)
    ).delivery
    assert (again.id, again.status) == (queued.id, pb.WEBHOOK_DELIVERY_STATUS_PENDING)
    wait_until(lambda: len(receiver.received()) == 2)
    first, second = receiver.received()
    assert first.body == second.body
    assert first.headers["x-agenttasks-delivery"] == second.headers["x-agenttasks-delivery"]
    (done,) = wait_until(lambda: deliveries(team, hook.id, pb.WEBHOOK_DELIVERY_STATUS_SUCCEEDED))
    assert len(done.attempts) == 2


def test_rotation_signs_with_both_secrets_during_the_grace_period(team, receiver, dispatch):
    created = create(team, receiver.url)
    rotated = team.admin.webhooks.RotateWebhookSecret(
        pb.RotateWebhookSecretRequest(
            webhook_id=created.webhook.id, grace_period=duration_pb2.Duration(seconds=3600)
        )
    )
    assert rotated.secret != created.secret and rotated.secret.startswith("whsec_")
    dispatch()
    team.admin.webhooks.TestWebhook(pb.TestWebhookRequest(webhook_id=created.webhook.id))
    (request,) = wait_until(lambda: receiver.received())
    for secret in (created.secret, rotated.secret):
        assert hmac_recipe_accepts(secret, request.body, request.headers["x-agenttasks-signature"])
        assert standard_accepts(secret, request.body, request.headers)
    # Without a grace period the old secret stops at once.
    last = team.admin.webhooks.RotateWebhookSecret(
        pb.RotateWebhookSecretRequest(
            webhook_id=created.webhook.id, grace_period=duration_pb2.Duration()
        )
    )
    team.admin.webhooks.TestWebhook(pb.TestWebhookRequest(webhook_id=created.webhook.id))
    wait_until(lambda: len(receiver.received()) == 2)
    newest = receiver.received()[1]
    assert standard_accepts(last.secret, newest.body, newest.headers)
    assert not standard_accepts(rotated.secret, newest.body, newest.headers)


def test_deleting_an_endpoint_stops_its_pending_deliveries(team, receiver, dispatch):
    hook = create(team, receiver.url).webhook
    team.admin.webhooks.TestWebhook(pb.TestWebhookRequest(webhook_id=hook.id))
    team.admin.webhooks.DeleteWebhook(pb.DeleteWebhookRequest(webhook_id=hook.id))
    dispatch()
    time.sleep(0.5)
    assert receiver.received() == []


def test_a_receiver_that_never_answers_does_not_delay_other_endpoints(team, dispatch):
    release = threading.Event()
    hanging = Receiver(lambda _: release.wait(30) and 200)
    quick = Receiver()
    try:
        slow_hook = create(team, hanging.url).webhook
        create(team, quick.url)
        dispatch(timeout=10.0)
        for _ in range(10):  # more than the hanging endpoint's share of senders
            team.admin.webhooks.TestWebhook(pb.TestWebhookRequest(webhook_id=slow_hook.id))
        wait_until(lambda: hanging.received())
        project = team.project()
        started = time.monotonic()
        new_task(team, project.id)
        wait_until(lambda: quick.received(), timeout=5)
        assert quick.received()[0].time - started < 1.0
    finally:
        release.set()
        hanging.close()
        quick.close()


def test_deliveries_list_newest_first_by_status_and_pages(team, receiver):
    hook = create(team, receiver.url).webhook
    ids = [
        team.admin.webhooks.TestWebhook(pb.TestWebhookRequest(webhook_id=hook.id)).delivery.id
        for _ in range(3)
    ]
    first = team.admin.webhooks.ListWebhookDeliveries(
        pb.ListWebhookDeliveriesRequest(webhook_id=hook.id, page_size=2)
    )
    assert [d.id for d in first.deliveries] == ids[::-1][:2] and first.next_page_token
    rest = team.admin.webhooks.ListWebhookDeliveries(
        pb.ListWebhookDeliveriesRequest(
            webhook_id=hook.id, page_size=2, page_token=first.next_page_token
        )
    )
    assert [d.id for d in rest.deliveries] == [ids[0]] and rest.next_page_token == ""
    assert deliveries(team, hook.id, pb.WEBHOOK_DELIVERY_STATUS_SUCCEEDED) == []


# --- the README's receiver -------------------------------------------------------------------


def readme_receiver(secret: str, monkeypatch) -> dict:
    """The README's Python receiver, loaded as a module (its server is not started)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### A receiver in Python", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.setenv("WEBHOOK_SECRET", secret)
    namespace: dict = {"__name__": "readme_receiver"}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace


def test_the_readme_receiver_verifies_real_deliveries(team, receiver, dispatch, monkeypatch):
    created = create(team, receiver.url)
    dispatch()
    team.admin.webhooks.TestWebhook(pb.TestWebhookRequest(webhook_id=created.webhook.id))
    (request,) = wait_until(lambda: receiver.received())
    headers = {name.title(): value for name, value in request.headers.items()}  # any case
    verify = readme_receiver(created.secret, monkeypatch)["verify"]
    assert verify(request.body, headers)["event"] == "ping"
    with pytest.raises(ValueError):
        verify(request.body + b" ", headers)
