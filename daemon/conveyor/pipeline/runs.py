"""What the agent's runs of one attempt add up to: tokens, cost and time, its words, and the result block.

An attempt is the agent's run plus any fix rounds that resumed it after a failing verify command; the
task's result (and its pull request) reports them together, while telemetry keeps one row per run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from conveyor.board.handoff import parse_handoff
from conveyor.checks.gate import withhold_secrets
from conveyor.runner.invoke import Invocation
from conveyor.runner.types import Tokens
from conveyor.scheduling.router import Route

SUMMARY_LIMIT = 4000
_ROW_TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


class Run(Protocol):
    """One agent invocation as the pipeline recorded it (structurally `pipeline._Attempt`)."""

    @property
    def route(self) -> Route: ...
    @property
    def invocation(self) -> Invocation: ...
    @property
    def cost(self) -> float: ...
    @property
    def cost_source(self) -> str: ...
    @property
    def row_id(self) -> int: ...
    @property
    def duration_s(self) -> float: ...


@dataclass(frozen=True)
class Totals:
    """Tokens, cost, time and turns over every run of this attempt (the agent's and its resumes)."""

    tokens: Tokens
    cost: float
    duration_s: float
    turns: int | None

    @classmethod
    def of(cls, runs: Sequence[Run]) -> Totals:
        tokens = Tokens()
        for run in runs:
            tokens = tokens + run.invocation.parsed.tokens
        turns = [run.invocation.parsed.turns for run in runs if run.invocation.parsed.turns is not None]
        return cls(tokens, round(sum(run.cost for run in runs), 6), sum(run.duration_s for run in runs),
                   sum(turns) if turns else None)

    @classmethod
    def of_rows(cls, rows: Sequence[Mapping[str, Any]]) -> Totals:
        """The same from telemetry rows (start-up recovery has no runs in memory)."""
        tokens = Tokens(*(sum(int(row.get(key) or 0) for row in rows) for key in _ROW_TOKENS))
        turns = [int(row["turns"]) for row in rows if row.get("turns") is not None]
        return cls(tokens, round(sum(float(row.get("cost_usd") or 0.0) for row in rows), 6),
                   sum(float(row.get("duration_s") or 0.0) for row in rows), sum(turns) if turns else None)


def summarize(runs: Sequence[Run]) -> str:
    """The agent's own words: its first answer, then what it said after each fix round; never a secret
    (the summary goes into the commit message and the pull request)."""
    texts = [(run.invocation.parsed.final_text or "").strip() for run in runs]
    rounds = (f"After fix round {index}: {text}" for index, text in enumerate(texts[1:], 1) if text)
    parts = [texts[0], *rounds]
    return withhold_secrets("\n\n".join(part for part in parts if part))[:SUMMARY_LIMIT]


def latest_session(runs: Sequence[Run]) -> str | None:
    return next((run.invocation.parsed.session_id for run in reversed(runs)
                 if run.invocation.parsed.session_id), None)


def result_block(runs: Sequence[Run], *, branch: str, changed: list[str], checks: list[dict[str, Any]],
                 skipped: Sequence[str]) -> dict[str, Any]:
    """The task's `result` (README, "A task file") before commit and publishing fill in theirs."""
    last = runs[-1]
    result = _result(summary=summarize(runs), changed=changed, branch=branch, tool=last.route.tool_name,
                     model=last.invocation.parsed.model or last.route.model, totals=Totals.of(runs),
                     cost_source=last.cost_source, session_id=latest_session(runs))
    if checks:
        result["checks"] = checks
    if last.invocation.sandbox is not None:
        result.update(last.invocation.sandbox.as_result())
    if skipped:
        result["skipped_tools"] = list(skipped)
    denials = [denial for run in runs for denial in run.invocation.parsed.permission_denials]
    if denials:
        result["permission_denials"] = list(dict.fromkeys(denials))
    texts = (withhold_secrets(run.invocation.parsed.final_text or "") for run in runs)
    handoff = parse_handoff("\n".join(texts))
    if handoff is not None:
        result.update(handoff.as_result())
    return result


def result_from_rows(rows: Sequence[Mapping[str, Any]], *, summary: str, branch: str,
                     changed: list[str]) -> dict[str, Any]:
    """The same block from telemetry rows: start-up recovery finishes a committed task with no runs in memory."""
    last: Mapping[str, Any] = rows[-1] if rows else {}
    sessions = [str(row["session_id"]) for row in rows if row.get("session_id")]
    return _result(summary=summary, changed=changed, branch=branch, tool=last.get("tool"), model=last.get("model"),
                   totals=Totals.of_rows(rows), cost_source=last.get("cost_source"),
                   session_id=sessions[-1] if sessions else None)


def _result(*, summary: str, changed: list[str], branch: str, tool: str | None, model: str | None,
            totals: Totals, cost_source: str | None, session_id: str | None) -> dict[str, Any]:
    return {
        "summary": summary or "(the agent gave no summary)",
        "artefacts": changed,
        "branch": branch,
        "commit": None,
        "pr_url": None,
        "tool": tool,
        "model": model,
        "tokens": totals.tokens.as_dict(),
        "cost_usd": totals.cost,
        "cost_source": cost_source,
        "duration_s": round(totals.duration_s, 3),
        "session_id": session_id,
        "turns": totals.turns,
        "metrics": adr009_metrics(totals, changed),
    }


def adr009_metrics(totals: Totals, changed: list[str]) -> dict[str, Any]:
    """`result.metrics` under the keys the workflow's metrics tooling reads (its ADR-009): minutes, and
    tokens as input (everything the model read, cached included), output and total."""
    tokens = totals.tokens
    read = tokens.input + tokens.cache_read + tokens.cache_write
    return {"duration_minutes": round(totals.duration_s / 60, 2),
            "token_count": {"input": read, "output": tokens.output, "total": read + tokens.output},
            "artifacts_modified": len(changed)}
