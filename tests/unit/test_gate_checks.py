"""Gate helpers: verify commands split without a shell, feedback for the agent, secrets kept out of free text."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.checks.gate import (
    VerifyCommand,
    VerifyRun,
    secret_kinds,
    split_command,
    verify_commands,
    verify_failure,
    verify_feedback,
    withhold_secrets,
)
from conveyor.core.errors import ConveyorError

TOKEN = "ghp" + "_" + "aB3" * 12


def test_commands_are_split_like_a_shell_but_config_comes_first() -> None:
    commands = verify_commands(["make test", "sh -c 'ruff check . && mypy'"], ["pytest -q 'tests/a b.py'"])
    assert [c.argv for c in commands] == [["make", "test"], ["sh", "-c", "ruff check . && mypy"],
                                          ["pytest", "-q", "tests/a b.py"]]
    assert commands[0].text == "make test"


def test_a_pipe_is_just_an_argument_without_sh_c() -> None:
    assert split_command("pytest | tee log", "here") == ["pytest", "|", "tee", "log"]


@pytest.mark.parametrize(("text", "words"), [("pytest -k 'oops", "close the quotes"), ("   ", "an empty command")])
def test_unsplittable_commands_name_where_and_the_fix(text: str, words: str) -> None:
    with pytest.raises(ConveyorError, match=words) as caught:
        verify_commands([], [text])
    assert "the task's verify" in str(caught.value)


def run(tail: str = "AssertionError: 1 != 2") -> VerifyRun:
    return VerifyRun(VerifyCommand("pytest -q", ["pytest", "-q"]), False, "exit code 1", tail, 1.5, Path("/l.log"))


def test_feedback_names_the_command_how_it_ended_and_the_output() -> None:
    text = verify_feedback(run(), 1, 2)
    assert text.startswith("The verify command `pytest -q` failed (exit code 1) on your change (fix round 1 of 2).")
    assert "```\nAssertionError: 1 != 2\n```" in text
    assert "do not commit" in text
    assert "(no output)" in verify_feedback(run(""), 2, 2)


def test_failure_message_counts_rounds_and_notes() -> None:
    assert verify_failure(run(), 0).message == "verify command `pytest -q` failed (exit code 1)"
    failure = verify_failure(run(), 2, "the agent gave up")
    assert (failure.kind, failure.message) == ("verify", "verify command `pytest -q` failed (exit code 1) after 2 "
                                                         "fix round(s); the agent gave up")
    assert run().check().as_dict() == {"check": "verify: pytest -q", "result": "failed",
                                       "detail": "exit code 1, 1.5s"}


def test_secrets_in_free_text_are_found_and_withheld() -> None:
    assert secret_kinds(f"I used {TOKEN}\nand nothing else") == ["GitHub Token"]
    withheld = withhold_secrets(f"Configured it with {TOKEN}")
    assert TOKEN not in withheld and withheld.startswith("(withheld:")
    assert withhold_secrets("Added a test for the password reset flow") == "Added a test for the password reset flow"
    assert withhold_secrets("") == ""
