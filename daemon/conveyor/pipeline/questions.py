"""An agent that needs an answer: it ends with `NEEDS_INPUT: <question>`; the task parks as `needs_input`.

Parked, a task holds no agent slot and no process: its file waits in `assigned/<agent>/` with `question`,
`asked_at` and the agent's `session_id`. A person writes `answer:` (the dashboard or `conveyor task answer`
does exactly that); the daemon then runs the task again, resuming the same session with the answer, or a
new session given the task, the question and the answer when the session cannot be resumed. Unanswered
after `question_timeout_s`, the task fails with `kind: unanswered`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from conveyor.core.task import Task

NEEDS_INPUT = "needs_input"
MARKER = re.compile(r"^\s*(?:NEEDS_INPUT|QUESTION):\s*(\S.*)$", re.MULTILINE)
MAX_QUESTION = 2000
PARK_KEYS = ("question", "asked_at", "session_id", "asked_tool", "answer", "answered_at")


def question_of(final_text: str | None) -> str | None:
    """The agent's last `NEEDS_INPUT:` (or `QUESTION:`) line, cut to MAX_QUESTION characters."""
    found = MARKER.findall(final_text or "")
    return found[-1].strip()[:MAX_QUESTION] if found else None


def is_parked(task: Task) -> bool:
    return task.data.get("status") == NEEDS_INPUT


@dataclass(frozen=True)
class Resume:
    """How a task with an answer runs again: `session_id` and `tool` to resume, else the fresh prompt."""

    question: str
    answer: str
    session_id: str | None
    tool: str | None

    def resume_prompt(self) -> str:
        return (f"A person answered your question.\n\nQuestion: {self.question}\n\nAnswer: {self.answer}\n\n"
                "Continue the task with this answer. Your workspace was reset to the task's starting point "
                "while you waited: make again any change you had made.")

    def fresh_prompt(self, prompt: str) -> str:
        return (f"{prompt}\n## Earlier you asked a question, and a person answered\n\n"
                f"Question: {self.question}\n\nAnswer: {self.answer}\n")


def take_answer(task: Task, now_iso: str) -> Resume | None:
    """The answered question of a task about to run (and its record moved into `questions:`), or None."""
    answer = task.data.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        return None
    question = str(task.data.get("question") or "")
    session = task.data.get("session_id")
    tool = task.data.get("asked_tool")
    history: list[Any] = list(task.data.get("questions") or []) if isinstance(task.data.get("questions"), list) else []
    history.append({"question": question, "asked_at": task.data.get("asked_at"), "answer": answer.strip(),
                    "answered_at": task.data.get("answered_at") or now_iso})
    for key in PARK_KEYS:
        task.data.pop(key, None)
    task.data["questions"] = history
    return Resume(question, answer.strip(), session if isinstance(session, str) else None,
                  tool if isinstance(tool, str) else None)
