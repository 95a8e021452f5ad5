"""The background job runner: timers, batches, failures and stopping, with no database."""

from __future__ import annotations

import logging
import threading

import peewee
import pytest

from agenttasks.server import workers
from agenttasks.server.config import ConfigError, ServerConfig, parse_duration
from agenttasks.server.workers import Job, Runner

WAIT = 10  # seconds a test waits for something that should happen at once (polled)


class Recorder:
    """A job body that records each run and answers from a script, then 0."""

    def __init__(self, answers=()) -> None:
        self.answers = list(answers)
        self.seen: list[int] = []
        self.ran = threading.Event()

    def __call__(self, now: int) -> int:
        self.seen.append(now)
        self.ran.set()
        answer = self.answers.pop(0) if self.answers else 0
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def wait_runs(self, count: int) -> None:
        for _ in range(WAIT * 100):
            if len(self.seen) >= count:
                return
            self.ran.wait(0.01)
            self.ran.clear()
        pytest.fail(f"ran {len(self.seen)} times, expected {count}")


def test_each_run_gets_the_injected_clock():
    body = Recorder()
    runner = Runner([Job("clocked", body, interval=60, batch=10)], clock=lambda: 1234).start()
    body.wait_runs(1)
    assert runner.stop(WAIT)
    assert body.seen == [1234]


def test_a_full_batch_runs_again_at_once_and_a_short_one_sleeps():
    body = Recorder([10, 10, 10, 3])
    runner = Runner([Job("busy", body, interval=60, batch=10)]).start()
    body.wait_runs(4)
    assert runner.stop(WAIT)
    assert len(body.seen) == 4  # the short batch was followed by the 60 s sleep


def test_a_failing_job_logs_backs_off_and_runs_again(caplog):
    body = Recorder([RuntimeError("boom"), peewee.OperationalError("server closed"), 10, 0])
    runner = Runner([Job("flaky", body, interval=60, batch=10)], max_backoff=0.01).start()
    body.wait_runs(4)
    assert runner.stop(WAIT)
    messages = [r.getMessage() for r in caplog.records if r.name == "agenttasks.workers"]
    assert any("flaky failed" in m for m in messages)
    assert any("database unavailable (OperationalError)" in m for m in messages)


def test_stop_lets_the_item_in_hand_finish():
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow(now: int) -> int:
        started.set()
        release.wait(WAIT)
        finished.set()
        return 0

    runner = Runner([Job("slow", slow, interval=60, batch=10)]).start()
    assert started.wait(WAIT)
    stopped: list[bool] = []
    stopper = threading.Thread(target=lambda: stopped.append(runner.stop(WAIT)))
    stopper.start()
    stopper.join(0.2)
    assert stopper.is_alive() and not finished.is_set()
    release.set()
    stopper.join(WAIT)
    assert stopped == [True] and finished.is_set()


def test_stop_gives_up_on_a_stuck_job_after_its_timeout(caplog):
    release = threading.Event()
    runner = Runner([Job("stuck", lambda now: int(release.wait(WAIT)), 60, 10)]).start()
    try:
        assert runner.stop(0.1) is False
        assert any("still busy" in r.getMessage() for r in caplog.records)
    finally:
        release.set()


def test_start_honours_no_workers():
    assert workers.start(ServerConfig(run_workers=False)).stop(1)
    names = [job.name for job in workers.default_jobs(ServerConfig())]
    assert names == ["lease-sweeper", "event-retention", "webhook-dispatcher"]
    assert [j.name for j in workers.default_jobs(ServerConfig(event_retention=0))] == [
        "lease-sweeper",
        "webhook-dispatcher",
    ]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3600", 3600), ("90s", 90), ("15m", 900), ("12h", 43200), ("7d", 604800), ("0", 0)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "7w", "-1", "inf", "nan", "1.5.2h"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_a_bad_retention_in_the_environment_names_the_setting(monkeypatch):
    monkeypatch.setenv("AGENTTASKS_EVENT_RETENTION", "a week")
    with pytest.raises(ConfigError, match="AGENTTASKS_EVENT_RETENTION"):
        ServerConfig.from_env()
    monkeypatch.setenv("AGENTTASKS_EVENT_RETENTION", "2d")
    assert ServerConfig.from_env().event_retention == 2 * 86400


def test_job_logs_stay_quiet_when_nothing_fails(caplog):
    caplog.set_level(logging.WARNING, "agenttasks.workers")
    body = Recorder()
    runner = Runner([Job("quiet", body, interval=60, batch=10)]).start()
    body.wait_runs(1)
    assert runner.stop(WAIT)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
