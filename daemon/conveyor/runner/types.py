"""Value types shared by the process supervisor, the output parsers and the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class Outcome(StrEnum):
    """How an agent invocation ended (README, "How it behaves", plus `auth_expired` from section 6)."""

    OK = "ok"
    AGENT_ERROR = "agent_error"      # the agent ran and reported failure (is_error, turn.failed...)
    TIMEOUT = "timeout"              # wall-clock or no-output timeout: we stopped it
    RATE_LIMITED = "rate_limited"    # 429 or a subscription usage window; pause the tool, spend no attempt
    OVERLOADED = "overloaded"        # 529 / 5xx "high demand"; retry with backoff, spend no attempt
    AUTH_EXPIRED = "auth_expired"    # 401; pause the tool and tell the user, spend no attempt
    CRASHED = "crashed"              # died by a signal, exited non-zero without a result, or unparseable

    @property
    def is_provider_limit(self) -> bool:
        """Provider limits are not task failures: they never spend an attempt."""
        return self in (Outcome.RATE_LIMITED, Outcome.OVERLOADED, Outcome.AUTH_EXPIRED)


@dataclass
class Tokens:
    """Token counts with one meaning for every CLI.

    `input` is input billed at the full rate (Anthropic `input_tokens`; OpenAI `input_tokens` minus
    `cached_tokens`); `cache_read` and `cache_write` are the cached parts; `output` includes reasoning.
    """

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(self.input + other.input, self.output + other.output,
                      self.cache_read + other.cache_read, self.cache_write + other.cache_write)

    def as_dict(self) -> dict[str, int]:
        return {"input": self.input, "output": self.output,
                "cache_read": self.cache_read, "cache_write": self.cache_write}


@dataclass
class ParsedRun:
    """What a parser extracted from one invocation's stdout."""

    outcome: Outcome = Outcome.CRASHED
    final_text: str = ""
    session_id: str | None = None
    turns: int | None = None
    tokens: Tokens = field(default_factory=Tokens)
    cost_usd: float | None = None          # as reported by the CLI; None means "compute from models.yaml"
    model: str | None = None               # the model the CLI says it used
    error_message: str | None = None       # a sentence for the task's error block
    api_error_status: int | None = None    # HTTP status behind a provider error, when known
    reset_at: float | None = None          # epoch seconds when a rate/usage limit lifts, when the CLI said
    permission_denials: list[str] = field(default_factory=list)
    retries: int = 0                       # provider retries the CLI made on its own (api_retry events)


@dataclass(frozen=True)
class ProcessSpec:
    """Everything needed to start and supervise one child process. `argv[0]` is an absolute path."""

    argv: list[str]
    cwd: Path
    env: dict[str, str]
    log_path: Path
    stdin_data: bytes | None = None        # None → stdin is /dev/null (codex exec blocks on an open stdin)
    timeout_s: float = 1800.0              # wall clock
    idle_timeout_s: float = 300.0          # no output on stdout or stderr for this long → hung
    log_cap_bytes: int = 16 * 1024 * 1024  # the log file never grows beyond this
    kill_grace_s: float = 5.0              # SIGTERM → wait this long → SIGKILL (whole process group)
    max_line_bytes: int = 8 * 1024 * 1024  # longer stdout lines are cut before reaching the parser


@dataclass
class ProcessResult:
    """How the child ended, as the supervisor saw it."""

    exit_code: int | None                  # None when killed by a signal
    signal: int | None                     # the signal that ended it, if any
    timed_out: bool = False                # wall-clock timeout
    idle_timed_out: bool = False           # no-output timeout
    stopped: bool = False                  # stopped on request (daemon shutdown)
    duration_s: float = 0.0
    output_bytes: int = 0                  # all bytes the child printed (stdout + stderr), capped or not
    log_truncated: bool = False
    stderr_tail: str = ""                  # last few KiB of stderr, for error messages
    pid: int | None = None
