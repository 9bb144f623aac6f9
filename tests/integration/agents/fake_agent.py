"""A tiny real agent CLI for integration tests: it obeys `FAKE <action> ...` lines in its prompt.

Invoked by the daemon as `python fake_agent.py [--json] --task <task_id> <prompt>` (argv from tools.yaml),
in the task's worktree. Actions, in prompt order:

    FAKE write <path> <text...>   write <text> (or a default line) to <path> in the worktree
    FAKE sleep <seconds>          sleep without printing (the daemon's timeouts are tested with this)
    FAKE sleep-first <seconds>    sleep only on the first run of this task (an interrupted run, then a good one)
    FAKE check-db                 read the telemetry row of this task from $FAKE_TELEMETRY_DB and record it
    FAKE crash                    kill itself with SIGKILL
    FAKE exit <code>              exit with <code> after the other actions
    FAKE exit-first <code>        exit with <code> on the first run of this task only
    FAKE say <text...>            print <text> as the final summary
    FAKE ask-first <question...>  on the first run of this task only: end at once with `NEEDS_INPUT: <question>`
    FAKE cost <usd>               report this cost (with --json) instead of the default 0.0125
    FAKE limit-first <seconds>    on the first run of this task only: a 429 naming a reset in <seconds>, exit 1

With no action it changes nothing, unless FAKE_DEFAULT_ACTION=write (then it writes fake/<task_id>.txt).
`--version` prints a version line (for `conveyor doctor`).
Every run records its prompt, argv and environment under $FAKE_AGENT_OUT/<task_id>.* for the test to read,
and appends `<task_id>` to $FAKE_AGENT_OUT/runs.log (one line per real run, for counting attempts).
`--json` prints a final result object shaped like `claude -p --output-format json`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import sys
import time
from pathlib import Path

DIRECTIVE = re.compile(r"^\s*(?:-\s+)?FAKE (\S+)(?: (.*))?$", re.MULTILINE)


def _record(out: Path, task_id: str, suffix: str, data: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{task_id}.{suffix}").write_text(data, encoding="utf-8")


def _check_db(out: Path, task_id: str) -> None:
    db = os.environ.get("FAKE_TELEMETRY_DB", "")
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT outcome, finished_at, tool FROM invocations WHERE task_id=?",
                            (task_id,)).fetchall()
    finally:
        conn.close()
    _record(out, task_id, "db.json", json.dumps([list(row) for row in rows]))


def _act(action: str, arg: str, task_id: str, out: Path, said: list[str]) -> int | None:
    if action == "write":
        path, _, text = arg.partition(" ")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text((text or f"written by the fake agent for {task_id}") + "\n", encoding="utf-8")
        said.append(f"wrote {path}")
    elif action == "sleep":
        time.sleep(float(arg))
    elif action == "sleep-first":
        marker = out / f"{task_id}.slept"
        if not marker.exists():
            marker.write_text("once\n")
            time.sleep(float(arg))
    elif action == "check-db":
        _check_db(out, task_id)
    elif action == "crash":
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "exit":
        return int(arg)
    elif action == "exit-first":
        marker = out / f"{task_id}.failed-once"
        if not marker.exists():
            marker.write_text("once\n")
            return int(arg)
    elif action == "say":
        said.append(arg)
    return None


def _claude_result(text: str, task_id: str, code: int, cost: float = 0.0125) -> str:
    return json.dumps({
        "type": "result", "subtype": "success", "is_error": code != 0, "result": text,
        "session_id": f"fake-session-{task_id}", "num_turns": 3, "total_cost_usd": cost,
        "usage": {"input_tokens": 1200, "output_tokens": 340, "cache_read_input_tokens": 50,
                  "cache_creation_input_tokens": 7},
        "modelUsage": {"fake-model-1": {"inputTokens": 1200, "outputTokens": 340, "cacheReadInputTokens": 50,
                                        "cacheCreationInputTokens": 7}},
        "permission_denials": [], "terminal_reason": "completed", "api_error_status": None,
    })


def main(argv: list[str]) -> int:
    if argv == ["--version"]:
        print("fake-agent 1.0 (test double)")
        return 0
    as_json = "--json" in argv
    args = [a for a in argv if a != "--json"]
    task_id, prompt = args[args.index("--task") + 1], args[-1]
    out = Path(os.environ.get("FAKE_AGENT_OUT", "fake-agent-out"))
    _record(out, task_id, "prompt", prompt)
    with (out / "runs.log").open("a", encoding="utf-8") as runs:
        runs.write(task_id + "\n")
    _record(out, task_id, "run.json", json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}))
    directives = DIRECTIVE.findall(prompt)
    if not directives and os.environ.get("FAKE_DEFAULT_ACTION") == "write":
        directives = [("write", f"fake/{task_id}.txt")]
    said: list[str] = []
    code = 0
    asks = [arg.strip() for action, arg in directives if action == "ask-first"]
    if asks and not (out / f"{task_id}.asked").exists():
        _record(out, task_id, "asked", asks[0])
        directives, said = [], [f"I need to know this first.\nNEEDS_INPUT: {asks[0]}"]
    limits = [arg.strip() for action, arg in directives if action == "limit-first"]
    if limits and not (out / f"{task_id}.limited").exists():
        _record(out, task_id, "limited", limits[0])
        print(f"API Error: 429 Too Many Requests: rate limit reached, try again in {limits[0]} seconds",
              file=sys.stderr, flush=True)
        return 1
    costs = [float(arg) for action, arg in directives if action == "cost"]
    for action, arg in directives:
        result = _act(action, arg.strip(), task_id, out, said)
        if result is not None:
            code = result
    text = "; ".join(said) or "nothing to do"   # a NEEDS_INPUT line stays on a line of its own
    print(_claude_result(text, task_id, code, *costs[-1:]) if as_json else f"fake agent: {text}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
