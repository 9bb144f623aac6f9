"""A scripted agent CLI for the gate and publishing tests: each invocation plays the next run of a script.

Invoked as `scripted-agent [--plain] --task <id> [--resume <session>] <prompt>` (argv from tools.yaml), in
the task's worktree. The script is `$SCRIPTED_AGENT_DIR/<task_id>.json`: a list of runs, one per
invocation, in order. A run may hold:

    expect_resume: true | false   whether argv must carry `--resume <the session of the previous run>`
    expect_session: str | null    the exact session argv must resume (`--resume <it>`), null: none
    expect_in_prompt: [str]       texts the prompt must contain (the verify failure fed back, say)
    run: [[argv...]]              commands to run in the worktree first (exit codes go to the run's record)
    write: {path: text}           files to write in the worktree
    sleep: seconds                then sleep without printing (for timeouts)
    say: text                     the final text (summary, hand-off lines)
    result: ok | rate_limited     how the run ends (a 429 result object for rate_limited)

A broken expectation ends the run with an error result naming it, so the test fails with the reason.
Every invocation is recorded as `<task_id>.run-<n>.json` (argv, prompt, cwd) for the test to read.
With `--plain` the output is plain text and there is no session (a CLI without resume support).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _result(text: str, task_id: str, *, is_error: bool = False, status: int | None = None) -> str:
    return json.dumps({
        "type": "result", "subtype": "success", "is_error": is_error, "result": text,
        "session_id": f"session-{task_id}", "num_turns": 2, "total_cost_usd": 0.01,
        "usage": {"input_tokens": 1000, "output_tokens": 100, "cache_read_input_tokens": 10,
                  "cache_creation_input_tokens": 1},
        "modelUsage": {"scripted-model": {"inputTokens": 1000, "outputTokens": 100}},
        "permission_denials": [], "terminal_reason": "api_error" if status else "completed",
        "api_error_status": status,
    })


def _problems(run: dict[str, Any], resume: str | None, prompt: str, task_id: str) -> list[str]:
    problems = []
    if "expect_resume" in run:
        wanted = f"session-{task_id}" if run["expect_resume"] else None
        if resume != wanted:
            problems.append(f"expected --resume {wanted}, got {resume}")
    if "expect_session" in run and resume != run["expect_session"]:
        problems.append(f"expected --resume {run['expect_session']}, got {resume}")
    for text in run.get("expect_in_prompt", []):
        if text not in prompt:
            problems.append(f"the prompt lacks {text!r}")
    return problems


def _commands(run: dict[str, Any]) -> list[int]:
    codes = []
    for argv in run.get("run", []):
        try:
            codes.append(subprocess.run(argv, capture_output=True, check=False, timeout=30).returncode)
        except OSError:
            codes.append(-1)
    return codes


def _act(run: dict[str, Any]) -> None:
    for path, text in run.get("write", {}).items():
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    if run.get("sleep"):
        time.sleep(float(run["sleep"]))


def _finish(run: dict[str, Any], task_id: str, plain: bool) -> int:
    text = run.get("say", "done")
    if plain:
        print(text, flush=True)
        return 0
    if run.get("result") == "rate_limited":
        print(_result("API Error: Request rejected (429) · rate limit reached", task_id, is_error=True,
                      status=429), flush=True)
        return 1
    print(_result(text, task_id), flush=True)
    return 0


def main(argv: list[str]) -> int:
    plain = "--plain" in argv
    args = [a for a in argv if a != "--plain"]
    task_id, prompt = args[args.index("--task") + 1], args[-1]
    resume = args[args.index("--resume") + 1] if "--resume" in args else None
    folder = Path(os.environ["SCRIPTED_AGENT_DIR"])
    index = len(list(folder.glob(f"{task_id}.run-*.json")))
    (folder / f"{task_id}.run-{index}.json").write_text(
        json.dumps({"argv": argv, "prompt": prompt, "cwd": os.getcwd(), "resume": resume}), encoding="utf-8")
    runs = json.loads((folder / f"{task_id}.json").read_text(encoding="utf-8"))
    if index >= len(runs):
        print(_result(f"script exhausted: run {index} of {len(runs)}", task_id, is_error=True), flush=True)
        return 3
    run = runs[index]
    problems = _problems(run, resume, prompt, task_id)
    if problems:
        print(_result("; ".join(problems), task_id, is_error=True), flush=True)
        return 3
    codes = _commands(run)
    if codes:
        (folder / f"{task_id}.codes-{index}.json").write_text(json.dumps(codes), encoding="utf-8")
    _act(run)
    return _finish(run, task_id, plain)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
