"""What a task's pull request says: title, body, labels, and the link back to the task file.

The body is what a reviewer reads before the diff: which task and agent, what the agent says it did,
the files, every gate check with its result, and what it cost. Anything quoted from the agent or the
task author is capped so a long transcript cannot push the body past GitHub's 65,536 characters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

TITLE_LIMIT = 256                   # GitHub refuses longer titles
DESCRIPTION_EXCERPT = 1500
SUMMARY_EXCERPT = 6000
FILES_LISTED = 100
PARTIAL_LABEL = "partial"
PARTIAL_PREFIX = "[partial] "


@dataclass(frozen=True)
class PullRequestContent:
    """Everything the body shows; built by the pipeline (or by recovery, from the commit and telemetry)."""

    task_id: str
    agent: str
    description: str
    summary: str
    files: Sequence[str]
    checks: Sequence[Mapping[str, Any]]
    tokens: Mapping[str, int]
    cost_usd: float
    task_link: str
    tool: str | None = None
    model: str | None = None
    commit: str | None = None
    partial_reason: str | None = None
    notes: Sequence[str] = field(default_factory=list)


def render_title(task_title: str, *, partial: bool) -> str:
    """The task's title on one line, marked when the work is partial."""
    title = " ".join(task_title.split()) or "Conveyor task"
    if partial:
        title = PARTIAL_PREFIX + title
    return title if len(title) <= TITLE_LIMIT else title[: TITLE_LIMIT - 3] + "..."


def labels_for(configured: Sequence[str], from_task: Sequence[str], *, partial: bool) -> list[str]:
    """Configured labels, then the task's, then `partial`; each once, in that order."""
    names = [*configured, *from_task, *([PARTIAL_LABEL] if partial else [])]
    return list(dict.fromkeys(name.strip() for name in names if name.strip()))


def web_url(api_url: str) -> str:
    """The web address behind an API base URL: api.github.com → github.com; GHE drops `/api/v3`."""
    parts = urlsplit(api_url.strip())
    if (parts.hostname or "").lower() == "api.github.com":
        return "https://github.com"
    path = parts.path.rstrip("/")
    path = path.removesuffix("/api/v3")
    return urlunsplit((parts.scheme, parts.netloc, path, "", "")).rstrip("/")


def task_link(task_path: str, *, github_repo: str | None, api_url: str, base: str) -> str:
    """Markdown link to the task file: a blob URL when the repository is on GitHub, else the relative path."""
    if github_repo is None:
        return f"`{task_path}`"
    url = f"{web_url(api_url)}/{github_repo}/blob/{quote(base, safe='/')}/{quote(task_path, safe='/')}"
    return f"[`{task_path}`]({url})"


def render_body(content: PullRequestContent) -> str:
    parts = [_task_section(content)]
    if content.partial_reason:
        parts.append(f"> [!WARNING]\n> **Partial work.** {_one_line(content.partial_reason)} The agent was "
                     "stopped before it finished; this draft holds what it had done so far.")
    summary = _excerpt(content.summary, SUMMARY_EXCERPT) or "(no summary)"
    parts.append(f"## What the agent says\n\n{summary}")
    parts.append(_files_section(content.files))
    parts.append(_checks_section(content.checks))
    parts.append(_cost_section(content))
    footer = "Opened by Conveyor" + (f" from commit {content.commit[:12]}" if content.commit else "") + "."
    parts.extend(content.notes)
    parts.append(f"---\n{footer}")
    return "\n\n".join(parts) + "\n"


def _task_section(content: PullRequestContent) -> str:
    who = [f"**Agent:** {content.agent}"]
    if content.tool:
        who.append(f"**Tool:** {content.tool}")
    if content.model:
        who.append(f"**Model:** {content.model}")
    lines = [f"## Task `{content.task_id}`", "", " · ".join(who)]
    description = _excerpt(content.description, DESCRIPTION_EXCERPT)
    if description:
        lines += ["", *("> " + line if line else ">" for line in description.splitlines())]
    lines += ["", f"Task file: {content.task_link}"]
    return "\n".join(lines)


def _files_section(files: Sequence[str]) -> str:
    shown = [f"- `{path}`" for path in files[:FILES_LISTED]]
    if len(files) > FILES_LISTED:
        shown.append(f"- ... and {len(files) - FILES_LISTED} more")
    return f"## Files changed ({len(files)})\n\n" + ("\n".join(shown) or "(none)")


def _checks_section(checks: Sequence[Mapping[str, Any]]) -> str:
    if not checks:
        return "## Checks\n\n(none recorded)"
    rows = ["| Check | Result | Detail |", "| --- | --- | --- |"]
    marks = {"passed": "✅ passed", "failed": "❌ failed", "skipped": "⏭️ skipped"}
    for check in checks:
        result = str(check.get("result", ""))
        rows.append(f"| {_cell(check.get('check'))} | {marks.get(result, _cell(result))} | "
                    f"{_cell(check.get('detail'))} |")
    return "## Checks\n\n" + "\n".join(rows)


def _cost_section(content: PullRequestContent) -> str:
    tokens = content.tokens
    return ("## Tokens and cost\n\n| Input | Output | Cache read | Cache write | Cost (USD) |\n"
            "| ---: | ---: | ---: | ---: | ---: |\n"
            f"| {tokens.get('input', 0):,} | {tokens.get('output', 0):,} | {tokens.get('cache_read', 0):,} | "
            f"{tokens.get('cache_write', 0):,} | ${content.cost_usd:.4f} |")


def _cell(value: object) -> str:
    return _one_line(str(value if value is not None else "")).replace("|", "\\|")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _excerpt(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit].rstrip() + "\n\n(cut; see the task file for the rest)"
