"""Pydantic models of the five configuration files (README, "Configuration").

Models are frozen and forbid unknown keys, so a typo'd key is an error that names the key and the
closest known one, never a silently ignored setting.
"""

from __future__ import annotations

import shlex
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

Tier = Literal["economy", "standard", "premium"]
Complexity = Literal["low", "medium", "high"]
DEFAULT_TIERS: dict[Complexity, Tier] = {"low": "economy", "medium": "standard", "high": "premium"}
ArgvTemplate = list[str | list[str]]



PARSER_NAMES: tuple[str, ...] = ("claude-json", "claude-stream-json", "codex-jsonl", "text")
"""The output parsers tools.yaml may name; `conveyor.runner.parsers` implements exactly these."""

class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- daemon.yaml
class CommitSettings(Frozen):
    author_name: str = "Conveyor"
    author_email: str = "conveyor@localhost"


class RemoteSettings(Frozen):
    name: str | None = "origin"
    push: bool = True


class PullRequestSettings(Frozen):
    enabled: bool = True
    api_url: str = "https://api.github.com"
    repo: str | None = None            # owner/name; default: parsed from the remote's URL
    token_env: str = "GITHUB_TOKEN"
    draft: bool = False
    labels: list[str] = Field(default_factory=lambda: ["conveyor"])


Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "low", "medium", "high", "critical")


class ReviewSettings(Frozen):
    """The review stage: a second CLI reads the change (read-only) and approves it or requests changes.

    `tool` unset: the other CLI than the author's (claude-code <-> codex); `fallback` unset: the author's
    own tool (with `model` when set). `rounds` caps the author's fix rounds after `request_changes`;
    `block_at` is the lowest severity that blocks; `required`: a change without an approving verdict
    opens as a draft (labelled `unreviewed` or `changes-requested`), never as a normal pull request.
    """

    enabled: bool = False
    tool: str | None = None
    model: str | None = None
    fallback: list[str] | None = None
    rounds: int = Field(default=2, ge=0)
    required: bool = True
    block_at: Severity = "medium"


class FollowUpSettings(Frozen):
    """Following the pull requests the daemon opened (the PR watcher).

    A CHANGES_REQUESTED or commented review, a review comment or an issue comment from a permitted login
    (in `permitted`, or, with `collaborators`, a repository collaborator with write access) becomes a
    follow-up task in inbox/; anyone else is ignored and logged. A failing check run or commit status on
    the head becomes a fix task, at most `max_ci_fixes` per pull request; after that the pull request is
    labelled `needs_human_label` with one comment. Merged and closed pull requests are recorded in the
    task's result and telemetry; `complete_on_merge` marks the ROADMAP.md item Completed on merge.
    """

    enabled: bool = False
    permitted: list[str] = Field(default_factory=list)
    collaborators: bool = True
    max_ci_fixes: int = Field(default=2, ge=0)
    poll_interval_s: float = Field(default=300.0, gt=0)
    complete_on_merge: bool = True
    needs_human_label: str = "needs-human"
    request_max_chars: int = Field(default=16000, ge=200, le=30000)
    log_tail_lines: int = Field(default=60, ge=1, le=1000)


class SizeLimits(Frozen):
    """The size gate: over either limit the change opens no normal pull request (None = no limit)."""

    max_changed_lines: int | None = Field(default=None, ge=1)
    max_changed_files: int | None = Field(default=None, ge=1)


class RoadmapSettings(Frozen):
    # Opt-in: a repository's existing ROADMAP.md may hold Planned items nobody meant as work orders for an
    # agent, and starting one spends money on the first `conveyor run` (README, "ROADMAP.md drives work").
    enabled: bool = False
    file: str = "ROADMAP.md"
    default_agent: str = "default"
    max_in_flight: int = Field(default=1, ge=1)


class DashboardSettings(Frozen):
    """`conveyor dashboard` (and the daemon, when `enabled`): where the local web page listens."""

    enabled: bool = False              # the daemon serves the dashboard beside its loop
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    allow_remote: bool = False         # a non-loopback host is refused unless this says it is meant


NotifyEvent = Literal["task_done", "task_failed", "needs_input"]
NOTIFY_EVENTS: tuple[NotifyEvent, ...] = ("task_done", "task_failed", "needs_input")


class ChannelSettings(Frozen):
    """One place notifications go: a JSON webhook, an ntfy topic URL, or a Slack-style incoming webhook."""

    name: str = "default"
    kind: Literal["webhook", "ntfy", "slack"]
    url: str
    events: list[NotifyEvent] = Field(default_factory=lambda: list(NOTIFY_EVENTS))
    token_env: str | None = None       # a bearer token read from this variable: sent as a header, never in a body

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL; write the channel's full URL, e.g. "
                             "https://ntfy.sh/my-topic")
        return value


class NotificationSettings(Frozen):
    """Where task events go, and how a flood is batched; sending never blocks the daemon's loop."""

    channels: list[ChannelSettings] = Field(default_factory=list)
    batch_window_s: float = Field(default=2.0, ge=0)    # events within this window go out together
    batch_max: int = Field(default=5, ge=1)             # more events than this in a window: one summary message
    timeout_s: float = Field(default=5.0, gt=0)
    retries: int = Field(default=2, ge=0)
    queue_max: int = Field(default=10000, ge=1)         # events waiting beyond this are dropped (and counted)


class FleetSettings(Frozen):
    # The branch the board leader pushes board moves to: never the base branch (Conveyor does not push to the
    # user's base branch); the person reads the board there and asks in the base branch's inbox/.
    board_branch: str = Field(default="conveyor/board", min_length=1)
    sync_s: float = Field(default=2.0, gt=0)   # how often the leader reads the inbox and pushes board moves


class DaemonSettings(Frozen):
    base_branch: str = "main"
    board_dir: str = "work/collaboration"
    state_dir: str | None = None       # default: <git common dir>/conveyor
    worktrees_dir: str | None = None   # default: <state_dir>/worktrees (outside the working tree)
    telemetry_db: str | None = None    # default: <state_dir>/telemetry.db
    max_parallel: int = Field(default=2, ge=1, le=64)
    rescan_interval_s: float = Field(default=10.0, gt=0)
    task_timeout_s: float = Field(default=1800.0, gt=0)
    idle_timeout_s: float = Field(default=300.0, gt=0)
    kill_grace_s: float = Field(default=5.0, ge=0)
    attempts: int = Field(default=3, ge=1)
    interruptions: int = Field(default=5, ge=1)   # daemon deaths under one task in a row before it is `error`
    handoffs: Literal["conveyor", "external"] = "conveyor"   # who turns `result.next_agent` into a follow-up
    privacy: Literal["metadata", "full"] = "metadata"
    log_cap_bytes: int = Field(default=16 * 1024 * 1024, ge=4096)
    drain_grace_s: float = Field(default=60.0, ge=0)
    archive_after_days: int = Field(default=30, ge=1)
    commit_board: bool = False
    verify: list[str] = Field(default_factory=list)
    verify_rounds: int = Field(default=2, ge=0)
    question_timeout_s: float = Field(default=86400.0, gt=0)   # an agent's unanswered question fails the task then
    # The repository's virtualenv (of the main checkout: ignored files are not in a task's workspace); its
    # bin/ leads verify's PATH so `pytest` and `python -m pytest` are the project's. null: none.
    verify_venv: str | None = ".venv"
    commit: CommitSettings = Field(default_factory=CommitSettings)
    remote: RemoteSettings = Field(default_factory=RemoteSettings)
    pull_requests: PullRequestSettings = Field(default_factory=PullRequestSettings)
    roadmap: RoadmapSettings = Field(default_factory=RoadmapSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    review: ReviewSettings = Field(default_factory=ReviewSettings)
    size: SizeLimits = Field(default_factory=SizeLimits)
    follow_up: FollowUpSettings = Field(default_factory=FollowUpSettings)
    # A fleet: several daemons serve one repository through this PostgreSQL database (README, "Running several
    # machines"); None is the single-host mode, which needs no server. The password belongs in PGPASSWORD or
    # ~/.pgpass, never in this committed file.
    coordination: str | None = None
    lease_timeout_s: float = Field(default=30.0, ge=1.0)   # a node silent this long loses its task leases
    fleet_poll_s: float = Field(default=1.0, gt=0)         # how often a node asks the database for work
    fleet: FleetSettings = Field(default_factory=FleetSettings)

    @field_validator("coordination")
    @classmethod
    def _coordination_is_postgres(cls, value: str | None) -> str | None:
        """Only PostgreSQL coordinates a fleet; a password in the URL would be committed with the file."""
        if value is None:
            return None
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"{value!r} is not a PostgreSQL URL; write postgresql://host[:port]/database "
                             "or remove the key for the single-host mode")
        if _has_password(value):
            raise ValueError("the URL holds a password, and daemon.yaml is committed; remove it and put it in "
                             "PGPASSWORD or ~/.pgpass")
        return value

    @field_validator("verify")
    @classmethod
    def _verify_splits(cls, value: list[str]) -> list[str]:
        """Verify commands are split with shlex and never run by a shell: refuse what cannot be split."""
        for text in value:
            try:
                argv = shlex.split(text)
            except ValueError as exc:
                raise ValueError(f"cannot split {text!r} into arguments ({exc}); close the quotes") from exc
            if not argv:
                raise ValueError("an empty verify command; remove it or write the command")
        return value


# ---------------------------------------------------------------- agents.yaml
class AgentSettings(Frozen):
    tool: str
    model: str | None = None
    models: dict[Tier, str] = Field(default_factory=dict)   # per complexity tier (policies.yaml maps)
    fallback: list[str] = Field(default_factory=list)       # "tool" or "tool:model"
    instructions: str | None = None                          # a file in the repository
    timeout_s: float | None = Field(default=None, gt=0)
    idle_timeout_s: float | None = Field(default=None, gt=0)
    max_turns: int | None = Field(default=None, ge=1)
    max_cost_usd: float | None = Field(default=None, gt=0)
    commit_type: str = "feat"
    review: ReviewSettings | None = None                     # None: daemon.yaml's `review`
    size: SizeLimits | None = None                           # None: daemon.yaml's `size`


class AgentsFile(Frozen):
    agents: dict[str, AgentSettings]


# ---------------------------------------------------------------- tools.yaml
class LimitPatternSettings(Frozen):
    rate_limited: list[str] = Field(default_factory=list)
    overloaded: list[str] = Field(default_factory=list)
    auth_expired: list[str] = Field(default_factory=list)


class ToolSettings(Frozen):
    binary: str
    argv: ArgvTemplate
    resume_argv: ArgvTemplate | None = None
    review_argv: ArgvTemplate | None = None    # read-only run for the review stage (plan mode, read-only sandbox)
    prompt_via: Literal["argument", "stdin"] = "argument"
    parser: str = "text"
    env: dict[str, str] = Field(default_factory=dict)
    env_allowlist: list[str] = Field(default_factory=lambda: ["PATH", "HOME", "LANG"])
    # Arguments that print the version; None: never run the tool just to ask (a custom CLI may not know
    # `--version` and start working instead).
    version_argv: list[str] | None = None
    credentials_env: list[str] = Field(default_factory=list)
    credentials_files: list[str] = Field(default_factory=list)
    limits: LimitPatternSettings = Field(default_factory=LimitPatternSettings)
    supports: list[Literal["max_turns", "max_cost_usd", "resume", "model"]] = Field(default_factory=list)
    # The OS sandbox around each run (runner/sandbox.py): auto = bubblewrap where it works, else none with
    # a warning; bwrap = fail the task if it cannot run; none = uncontained.
    sandbox: Literal["auto", "bwrap", "none"] = "auto"
    sandbox_writable: list[str] = Field(default_factory=list)   # more writable folders (~ and $VAR expand)
    home_env: list[str] = Field(default_factory=list)           # variables naming the CLI's own state folders
    home_files: list[str] = Field(default_factory=list)         # files copied into its private home

    @field_validator("parser")
    @classmethod
    def _known_parser(cls, value: str) -> str:
        if value not in PARSER_NAMES:
            raise ValueError(f"unknown parser {value!r}; known parsers: {', '.join(sorted(PARSER_NAMES))}")
        return value


class ToolsFile(Frozen):
    tools: dict[str, ToolSettings]


# ---------------------------------------------------------------- models.yaml
class Price(Frozen):
    """US dollars per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float = Field(default=0.0, ge=0)
    cache_write: float = Field(default=0.0, ge=0)


class ModelSettings(Frozen):
    tool: str | None = None
    tier: Tier = "standard"
    price: Price | None = None


class ModelsFile(Frozen):
    models: dict[str, ModelSettings] = Field(default_factory=dict)


# ---------------------------------------------------------------- policies.yaml
class Budget(Frozen):
    scope: str = "global"                        # "global" or an agent name
    period: Literal["daily", "monthly"]
    usd: float = Field(gt=0)
    limit: Literal["soft", "hard"] = "soft"


class ToolLimits(Frozen):
    max_parallel: int | None = Field(default=None, ge=1)
    starts_per_minute: float | None = Field(default=None, gt=0)


class Backoff(Frozen):
    initial_s: float = Field(default=30.0, gt=0)
    max_s: float = Field(default=1800.0, gt=0)
    jitter: float = Field(default=0.2, ge=0, le=1)


class PoliciesFile(Frozen):
    budgets: list[Budget] = Field(default_factory=list)
    complexity_tiers: dict[Complexity, Tier] = Field(default_factory=lambda: dict(DEFAULT_TIERS))
    tools: dict[str, ToolLimits] = Field(default_factory=dict)
    backoff: Backoff = Field(default_factory=Backoff)
    # a fleet reserves this much of each hard budget before a run whose task and agent set no max_cost_usd
    run_estimate_usd: float = Field(default=1.0, gt=0)


def _has_password(url: str) -> bool:
    """postgresql://user:secret@host/db or ...?password=secret."""
    parts = urlsplit(url)
    return bool(parts.password) or "password" in parse_qs(parts.query)
