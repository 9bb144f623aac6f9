"""Notifications against a real HTTP receiver on 127.0.0.1: a daemon run sends each event once to each
channel (webhook, ntfy, Slack-style), a flood is batched, and a dead receiver never slows the caller."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conveyor.config import load_config
from conveyor.config.models import ChannelSettings, NotificationSettings
from conveyor.core.errors import ConfigError
from conveyor.notify.dispatcher import Notifications
from conveyor.notify.events import Event
from tests.integration.conftest import DAEMON_YAML, Repo
from tests.integration.receiver import DeadReceiver, Receiver

TOKEN = "ntfy-token-0123456789abcdef"


def notifications_yaml(receiver: Receiver, **extra: object) -> str:
    settings = "".join(f"  {key}: {value}\n" for key, value in extra.items())
    return (DAEMON_YAML + "notifications:\n" + settings + "  channels:\n"
            f"    - {{name: hook, kind: webhook, url: \"{receiver.url('/hook')}\"}}\n"
            f"    - {{name: phone, kind: ntfy, url: \"{receiver.url('/topic')}\", token_env: NTFY_TOKEN,"
            " events: [task_failed, needs_input]}\n"
            f"    - {{name: chat, kind: slack, url: \"{receiver.url('/slack')}\"}}\n")


def test_a_daemon_run_sends_each_event_once_to_each_channel(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NTFY_TOKEN", TOKEN)          # the daemon's environment, read with its configuration
    with Receiver() as receiver:
        repo.write_config("daemon.yaml", notifications_yaml(receiver, batch_window_s=0.2))
        repo.submit("n-done", description="FAKE write done.txt x")
        repo.submit("n-fail", description=f"FAKE say leaked {TOKEN}\nFAKE exit 3")
        run = repo.run_once()
        assert run.code == 0
        receiver.wait(5)          # and no more will come: the run closed the notifier and joined its thread
        hooks = [event for request in receiver.at("/hook") for event in request.json()["events"]]
        assert sorted((event["kind"], event["task_id"]) for event in hooks) == [("task_done", "n-done"),
                                                                                ("task_failed", "n-fail")]
        done = next(event for event in hooks if event["kind"] == "task_done")
        assert done["branch"] == "conveyor/n-done" and "pr_url" in done and "done on branch" in done["text"]
        phone = receiver.at("/topic")                       # routed: failures and questions only
        assert len(phone) == 1 and b"n-fail" in phone[0].body and b"failed (" in phone[0].body
        assert phone[0].headers["authorization"] == f"Bearer {TOKEN}"
        assert phone[0].headers["tags"] == "task_failed"
        slack = [request.json()["text"] for request in receiver.at("/slack")]
        assert len(slack) == 2 and any("n-done" in text for text in slack)
        assert all(TOKEN.encode() not in request.body for request in receiver.requests)
        assert len(receiver.requests) == 5


def event(number: int, kind: str = "task_done") -> Event:
    return Event(kind, f"flood-{number:04d}", "dev", "t", "done on branch b", "2026-01-01T00:00:00Z",
                 branch=f"conveyor/flood-{number:04d}")


def test_a_flood_of_a_thousand_tasks_goes_out_in_a_few_batched_messages() -> None:
    with Receiver() as receiver:
        settings = NotificationSettings(batch_window_s=1.0, batch_max=5, channels=[
            ChannelSettings(kind="webhook", url=receiver.url("/hook")),
            ChannelSettings(kind="slack", url=receiver.url("/slack"))])
        notifications = Notifications(settings, "repo", {})
        for number in range(1000):
            notifications.emit(event(number, "task_failed" if number % 100 == 0 else "task_done"))
        notifications.close(timeout=30)
        hooks = receiver.at("/hook")
        assert 1 <= len(hooks) <= 5
        ids = [item["task_id"] for request in hooks for item in request.json()["events"]]
        assert sorted(ids) == [f"flood-{number:04d}" for number in range(1000)]       # each one, once
        texts = [request.json()["text"] for request in receiver.at("/slack")]
        assert len(texts) == len(hooks)
        assert "task failed" in " ".join(texts) and "more" in texts[0]


def test_a_dead_receiver_never_slows_the_loop(capsys: pytest.CaptureFixture[str]) -> None:
    dead = DeadReceiver()
    try:
        settings = NotificationSettings(batch_window_s=0.0, batch_max=1000, timeout_s=1.0, retries=1,
                                        channels=[ChannelSettings(kind="webhook", url=dead.url("/hook"))])
        notifications = Notifications(settings, "repo", {})
        lags = []
        for number in range(200):                 # a loop pass every 5 ms that emits one event each time
            started = time.monotonic()
            notifications.emit(event(number))
            time.sleep(0.005)
            lags.append(time.monotonic() - started - 0.005)
        closing = time.monotonic()
        notifications.close(timeout=2.0)
        close_s = time.monotonic() - closing
    finally:
        dead.close()
    lags.sort()
    print(f"loop lag with a dead receiver: p50 {lags[100] * 1000:.2f} ms, max {lags[-1] * 1000:.2f} ms; "
          f"close {close_s:.2f} s")
    # a blocking send would cost each pass the 1 s timeout (twice, with the retry)
    assert lags[-1] < 0.5
    assert close_s < 3.0
    assert notifications.sent == 0


def test_failures_are_logged_and_the_run_goes_on(repo: Repo) -> None:
    with Receiver(status=500) as receiver:
        repo.write_config("daemon.yaml", notifications_yaml(receiver, batch_window_s=0.0, retries=1))
        repo.submit("n-500", description="FAKE write a.txt x")
        run = repo.run_once()
        assert run.code == 0
        assert repo.done_doc("n-500")["status"] == "done"
        failures = run.events("notify.failed")
        assert {entry["channel"] for entry in failures} == {"hook", "chat"}
        assert all(entry["attempts"] == 2 and entry["task_id"] == "n-500" for entry in failures)
        assert all("127.0.0.1" not in str(entry) for entry in failures)   # a webhook URL can be a secret


def test_a_channel_without_an_http_url_is_a_clear_config_error(repo: Repo) -> None:
    repo.write_config("daemon.yaml", DAEMON_YAML + "notifications:\n  channels:\n    - {kind: ntfy, url: ntfy.sh/x}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(repo.path, repo.git_dir)
    problem = caught.value.problems[0]
    assert "notifications" in str(problem.field) and "url" in str(problem.field)
    assert "not an http(s) URL" in problem.message
    assert Path(str(problem.file)).name == "daemon.yaml"
