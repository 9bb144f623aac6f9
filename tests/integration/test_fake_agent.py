"""The fake agent CLI speaks each output shape the daemon's parsers read from the real CLIs, and replays the
real CLIs' captured output (tests/fixtures/agent-output) through the daemon: what other tests rely on when
they pick an output mode."""

from __future__ import annotations

import pytest

from tests.integration.conftest import Repo, use_only
from tests.support.agent_script import step


@pytest.mark.parametrize(("output", "summary"), [
    ("text", "fake agent: did it"), ("claude-json", "did it"), ("claude-stream-json", "did it"),
    ("codex-jsonl", "did it")])
def test_each_output_mode_is_read_by_its_parser(repo: Repo, output: str, summary: str) -> None:
    use_only(repo, repo.agent_bin, "fake", output=output)
    repo.submit("t-mode", description="FAKE write a.txt x\nFAKE say did it")
    repo.run_once()
    document = repo.done_doc("t-mode")
    assert document["status"] == "done", document.get("error")
    assert document["result"]["artefacts"] == ["a.txt"] and document["result"]["summary"] == summary
    (row,) = repo.rows("t-mode")
    assert row["outcome"] == "ok"
    if output != "text":
        assert (row["input_tokens"], row["output_tokens"]) == (1200, 340)


@pytest.mark.parametrize(("output", "fixture"), [
    ("claude-stream-json", "claude-2.1.328-stream-json-429-max-retries-1.jsonl"),
    ("codex-jsonl", "codex-0.169.0-jsonl-429.jsonl")])
def test_a_replayed_rate_limit_of_a_real_cli_pauses_the_tool(repo: Repo, output: str, fixture: str) -> None:
    use_only(repo, repo.agent_bin, "fake", output=output)
    repo.submit("t-limit", description=step("replay", fixture=fixture, code=1))
    run = repo.run_once()
    assert [row["outcome"] for row in repo.rows("t-limit")] == ["rate_limited"]
    assert any(event["tool"] == "fake" for event in run.events("tool.paused"))
    assert not repo.done_path("t-limit").exists()              # held for the pause, no attempt spent
