"""An agent that asks: the task parks as needs_input (no process, no slot), a notification goes out, an
answer (`conveyor task answer`) resumes it to done; unanswered, it fails with kind `unanswered`."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import yaml

from tests.integration.conftest import DAEMON_YAML, Repo
from tests.integration.daemon_process import running_daemon
from tests.integration.receiver import Receiver


def assigned_doc(repo: Repo, task_id: str) -> dict[str, Any] | None:
    path = repo.board / "assigned" / "backend-dev" / f"{task_id}.yaml"
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return document if isinstance(document, dict) else None


def wait_for(predicate: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_question_parks_the_task_and_the_answer_resumes_it(repo: Repo) -> None:
    with Receiver() as receiver:
        repo.write_config("daemon.yaml", DAEMON_YAML + "notifications:\n  batch_window_s: 0\n  channels:\n"
                          f"    - {{kind: webhook, url: \"{receiver.url('/hook')}\"}}\n")
        repo.submit("ask-1", description="FAKE ask@1 Which colour should the button be?\n"
                                         "FAKE write colour.txt chosen")
        with running_daemon(repo.path) as daemon:
            wait_for(lambda: (assigned_doc(repo, "ask-1") or {}).get("status") == "needs_input", "the question")
            parked = assigned_doc(repo, "ask-1")
            assert parked is not None
            assert parked["question"] == "Which colour should the button be?"
            assert parked["asked_tool"] == "fake" and parked["attempt"] == 0
            assert not list((repo.git_dir / "conveyor" / "agents").glob("*.pid"))   # no process held
            status = subprocess.run([sys.executable, "-m", "conveyor", "status", "--format", "json"],
                                    cwd=repo.path, capture_output=True, text=True, check=True).stdout
            assert "Which colour should the button be?" in status
            receiver.wait(1)
            asked = receiver.at("/hook")[0].json()["events"][0]
            assert asked["kind"] == "needs_input" and "Which colour" in asked["text"]
            answered = subprocess.run([sys.executable, "-m", "conveyor", "task", "answer", "ask-1", "Make it teal"],
                                      cwd=repo.path, capture_output=True, text=True, check=False)
            assert answered.returncode == 0, answered.stderr
            wait_for(lambda: repo.done_path("ask-1").exists(), "the resumed task to finish")
            daemon.wait_event("task.answered")
        done = repo.done_doc("ask-1")
        assert done["status"] == "done" and done["attempt"] == 1
        assert done["questions"][0]["question"] == "Which colour should the button be?"
        assert done["questions"][0]["answer"] == "Make it teal"
        assert "question" not in done and "answer" not in done
        prompt = repo.agent_prompt("ask-1")     # the fake CLI cannot resume a session: a new one, told the answer
        assert "Question: Which colour should the button be?" in prompt and "Answer: Make it teal" in prompt
        assert repo.git("show", "conveyor/ask-1:colour.txt") == "chosen"
        receiver.wait(2)


def test_an_unanswered_question_fails_the_task(repo: Repo) -> None:
    repo.write_config("daemon.yaml", DAEMON_YAML + "question_timeout_s: 1\n")
    repo.submit("ask-2", description="FAKE ask@1 Anyone there?")
    with running_daemon(repo.path):
        wait_for(lambda: repo.done_path("ask-2").exists(), "the unanswered task to fail")
    done = repo.done_doc("ask-2")
    assert done["status"] == "error" and done["error"]["kind"] == "unanswered"
    assert "Anyone there?" in done["error"]["message"]


def test_answering_a_task_that_asks_nothing_is_refused(repo: Repo) -> None:
    repo.submit("plain")
    done = subprocess.run([sys.executable, "-m", "conveyor", "task", "answer", "plain", "yes"], cwd=repo.path,
                          capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "is not waiting for an answer" in done.stderr
