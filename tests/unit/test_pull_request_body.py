"""Pull-request title, labels, links and body: what a reviewer reads before the diff."""

from __future__ import annotations

from conveyor.publish.pull_request import (
    FILES_LISTED,
    TITLE_LIMIT,
    PullRequestContent,
    labels_for,
    render_body,
    render_title,
    task_link,
    web_url,
)


def content(**overrides: object) -> PullRequestContent:
    fields: dict[str, object] = {
        "task_id": "t-1", "agent": "backend-dev", "description": "Add /health.\n\nReturn ok.",
        "summary": "Added the endpoint and a test.", "files": ["src/health.py", "tests/test_health.py"],
        "checks": [{"check": "secret scan", "result": "passed", "detail": "3 added line(s), nothing found"},
                   {"check": "verify: pytest -q | tee x", "result": "failed", "detail": "exit code 1, 2.0s"},
                   {"check": "verify", "result": "skipped", "detail": "not run"}],
        "tokens": {"input": 12345, "output": 678, "cache_read": 9, "cache_write": 0}, "cost_usd": 0.123456,
        "task_link": "`work/collaboration/done/backend-dev/t-1.yaml`", "tool": "claude-code", "model": "sonnet",
        "commit": "0123456789abcdef0123"}
    fields.update(overrides)
    return PullRequestContent(**fields)  # type: ignore[arg-type]


def test_body_has_task_summary_files_checks_and_cost() -> None:
    body = render_body(content())
    assert body.startswith("## Task `t-1`\n\n**Agent:** backend-dev · **Tool:** claude-code · **Model:** sonnet\n\n"
                           "> Add /health.\n>\n> Return ok.\n\n"
                           "Task file: `work/collaboration/done/backend-dev/t-1.yaml`")
    assert "## What the agent says\n\nAdded the endpoint and a test." in body
    assert "## Files changed (2)\n\n- `src/health.py`\n- `tests/test_health.py`" in body
    assert "| secret scan | ✅ passed | 3 added line(s), nothing found |" in body
    assert "| verify: pytest -q \\| tee x | ❌ failed | exit code 1, 2.0s |" in body    # pipes escaped in cells
    assert "| verify | ⏭️ skipped | not run |" in body
    assert "| 12,345 | 678 | 9 | 0 | $0.1235 |" in body
    assert body.rstrip().endswith("Opened by Conveyor from commit 0123456789ab.")
    assert "Partial work" not in body


def test_partial_work_is_announced() -> None:
    body = render_body(content(partial_reason="timeout: timed out after 60s"))
    assert "> [!WARNING]\n> **Partial work.** timeout: timed out after 60s" in body


def test_long_texts_and_file_lists_are_cut() -> None:
    body = render_body(content(summary="x" * 20000, description="d" * 5000,
                               files=[f"f{i}.py" for i in range(FILES_LISTED + 5)]))
    assert len(body) < 20000
    assert "(cut; see the task file for the rest)" in body
    assert "- ... and 5 more" in body


def test_title_is_one_line_marked_when_partial_and_capped() -> None:
    assert render_title("Add   the\nendpoint", partial=False) == "Add the endpoint"
    assert render_title("Add it", partial=True) == "[partial] Add it"
    assert len(render_title("y" * 400, partial=True)) == TITLE_LIMIT
    assert render_title("  ", partial=False) == "Conveyor task"


def test_labels_keep_order_once_each_and_add_partial() -> None:
    assert labels_for(["conveyor", "bot"], ["api", "conveyor", " "], partial=True) == ["conveyor", "bot", "api",
                                                                                      "partial"]
    assert labels_for([], [], partial=False) == []


def test_web_url_for_github_enterprise_and_others() -> None:
    assert web_url("https://api.github.com") == "https://github.com"
    assert web_url("https://ghe.example.com/api/v3/") == "https://ghe.example.com"
    assert web_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"


def test_task_link_is_a_url_on_github_else_a_relative_path() -> None:
    path = "work/collaboration/done/dev/t 1.yaml"
    assert task_link(path, github_repo=None, api_url="https://api.github.com", base="main") == f"`{path}`"
    assert task_link(path, github_repo="octo/w", api_url="https://api.github.com", base="release/1") == (
        f"[`{path}`](https://github.com/octo/w/blob/release/1/work/collaboration/done/dev/t%201.yaml)")
