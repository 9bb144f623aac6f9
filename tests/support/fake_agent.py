"""The one fake agent CLI of the tests: a real executable that plays a script of steps, honest or hostile.

Tools.yaml runs it as `fake-agent [--output MODE] [--resume SESSION] --task <task_id> <prompt>` in the task's
workspace, as it would run `claude` or `codex`. It imports nothing but the standard library, so it starts under
any interpreter (`install_fake_agent` gives it this one's `#!`) and inside the sandbox.

SCRIPT. Every step is a JSON object: `{"do": <kind>, <fields>..., "run": n, "tool": name}`. Steps come from
lines of the prompt (a task's description reaches the agent there), in order, and then from the file
`$FAKE_AGENT_SCRIPTS/<task_id>.json` (a JSON list of steps) when that variable is set (a resumed run is
prompted with feedback only, so a script of several runs lives in a file). A prompt line is either

    FAKE {"do": "write", "path": "a.txt", "text": "hello"}      the step itself, or
    FAKE write a.txt hello                                       the same: the fields in the order below,
                                                                 the last one taking the rest of the line;
    FAKE limited:sleep@1 5                                       `tool:` and `@run` set those two keys.

`run` (1-based, runs of this task by this tool) and `tool` (the FAKE_AGENT_TOOL variable, default `fake`)
make a step conditional. In every string field `{task}` stands for the task id. Kinds and their fields:

    write path text            write a file (text + a newline; `#!` at its start makes it executable);
                               missing folders are made, unless `"parents": false`
    append path text           append a line to a file
    delete path                delete a file or folder (`.` is the workspace itself; a link is unlinked)
    symlink path target        make `path` a link to `target` (`.`: the workspace becomes a link)
    edit path old new          replace text in a file (old and new are JSON-only fields)
    run argv                   run a program here (git, say); argv a JSON list, or the rest of the line split
    commit message             `git add --all` and a commit under an identity of its own
    sleep seconds              sleep without a word (timeouts, or a daemon stopped meanwhile)
    print text                 print a line now (`"stream": "stderr"` for stderr)
    emit bytes                 print that many bytes of `x` lines (a flood)
    say text                   add to the final message (without any, it lists the files written)
    cost usd                   the cost the result object reports (default 0.0125)
    ask question               end now, asking: the final message ends with `NEEDS_INPUT: <question>`
    require path               end now with exit code 4 unless the path exists
    exit code                  the exit code, once the other steps are done
    kill signal                kill itself with a signal (default KILL)
    signal target signal       signal `parent`, or every process whose command line names `conveyor`
    spawn how seconds          leave a sleeping grandchild (`setsid`, `fork`, `double-fork`), its argv
                               naming `conveyor-grandchild-<task>`
    child-env                  start a child that records its own environment (`<task>.child-env.json`)
    query db sql               read an SQLite file; the rows go to the run record (`"params": [...]`)
    api-error status retry     end now as the CLI does on an API error (401, 429, 5xx), in the output mode
    replay fixture code        print a captured output of a real CLI (`tests/fixtures/agent-output/`)
    expect-resume session      an error result unless argv resumes that session (`""`: no resume)
    expect-prompt text         an error result unless the prompt (without script lines) holds the text

A step that fails (a write outside the workspace, a signal refused) does not stop the script: its outcome
(`ok` or the error) goes into the run record, so a hostile attempt can be shown both made and refused.
A file script whose every step names a run, run once more than that, ends with `script exhausted`.

OUTPUT MODES (`--output`): `text` (default; final line `fake agent: <said>`), `claude-json` (one result object,
as `claude -p --output-format json`), `claude-stream-json` (init, assistant, result lines) and `codex-jsonl`
(`codex exec --json` events). The session is `session-<task>`.

RECORDS, in $FAKE_AGENT_OUT (default `fake-agent-out`): `<task>.run-<n>.json` per run (argv, prompt, cwd,
env, pid and parent pid, interpreter, resume, tool, run, steps with outcomes, query rows, signalled pids),
`<task>.prompt` (the last prompt), and `events.log` (`start|end <unix time> <tool> <task>` lines: concurrency
is measured from them). `--version` prints a line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LINE = re.compile(r"^\s*(?:-\s+)?FAKE (.+?)\s*$", re.MULTILINE)
SHORT = re.compile(r"^(?:([\w-]+):)?([a-z-]+)(?:@(\d+))?(?: (.*))?$", re.DOTALL)
FIELDS = {"write": ["path", "text"], "append": ["path", "text"], "delete": ["path"], "symlink": ["path", "target"],
          "edit": ["path"], "run": ["argv"], "commit": ["message"], "sleep": ["seconds"], "print": ["text"],
          "emit": ["bytes"], "say": ["text"], "cost": ["usd"], "ask": ["question"], "require": ["path"],
          "exit": ["code"], "kill": ["signal"], "signal": ["target", "signal"], "spawn": ["how", "seconds"],
          "child-env": [], "query": ["db", "sql"], "api-error": ["status", "retry"], "replay": ["fixture", "code"],
          "expect-resume": ["session"], "expect-prompt": ["text"]}
IDENTITY = ["-c", "user.name=Fake Agent", "-c", "user.email=fake-agent@localhost"]
USAGE = {"input_tokens": 1200, "output_tokens": 340, "cache_read_input_tokens": 50, "cache_creation_input_tokens": 7}
MODEL = "fake-model-1"
NOTHING = "nothing to do"
API_ERRORS = {401: "API Error: 401 authentication_error: OAuth token has expired. Please run /login",
              429: "API Error: 429 Too Many Requests: rate limit reached"}


class Stop(Exception):
    """Ends the run at once with this exit code, after printing `text` in the output mode (`status`: the API
    error it reports; `plain`: text mode prints it as it is, without the `fake agent:` prefix)."""

    def __init__(self, code: int, text: str, status: int | None = None, plain: bool = False) -> None:
        super().__init__(text)
        self.code, self.text, self.status, self.plain = code, text, status, plain


def parse_line(text: str) -> dict[str, Any]:
    if text.startswith("{"):
        step = json.loads(text)
        return step if isinstance(step, dict) else {"do": "invalid", "text": text}
    match = SHORT.match(text)
    if not match or match.group(2) not in FIELDS:
        return {"do": "invalid", "text": text}
    tool, kind, run, rest = match.groups()
    names, step = FIELDS[kind], {"do": kind}
    words = (rest or "").split(" ", max(len(names) - 1, 0)) if rest else []
    step.update(dict(zip(names, words, strict=False)))
    if kind == "run":
        step["argv"] = (rest or "").split()
    return {**step, **({"tool": tool} if tool else {}), **({"run": int(run)} if run else {})}


def script_of(prompt: str, task: str) -> tuple[list[dict[str, Any]], bool]:
    """The steps of this task and whether a file gave them (only a file script can run out)."""
    steps = [parse_line(found) for found in LINE.findall(prompt)]
    folder = os.environ.get("FAKE_AGENT_SCRIPTS")
    from_file = bool(folder) and Path(folder or ".", f"{task}.json").is_file()
    if from_file:
        steps += json.loads(Path(folder or ".", f"{task}.json").read_text(encoding="utf-8"))
    if not steps and os.environ.get("FAKE_AGENT_DEFAULT"):
        steps = json.loads(os.environ["FAKE_AGENT_DEFAULT"])
    return [_fill(step, task) for step in steps], from_file


def _fill(value: Any, task: str) -> Any:
    if isinstance(value, str):
        return value.replace("{task}", task)
    if isinstance(value, list):
        return [_fill(item, task) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, task) for key, item in value.items()}
    return value


class Run:
    """One invocation: its arguments, its record, what it has said so far."""

    def __init__(self, argv: list[str]) -> None:
        self.mode = argv[argv.index("--output") + 1] if "--output" in argv else "text"
        self.task, self.prompt = argv[argv.index("--task") + 1], argv[-1]
        self.resume = argv[argv.index("--resume") + 1] if "--resume" in argv else None
        self.tool = os.environ.get("FAKE_AGENT_TOOL", "fake")
        self.out = Path(os.environ.get("FAKE_AGENT_OUT", "fake-agent-out"))
        self.out.mkdir(parents=True, exist_ok=True)
        earlier = [json.loads(p.read_text(encoding="utf-8")) for p in self.out.glob(f"{self.task}.run-*.json")]
        self.number = len(earlier) + 1
        self.tool_run = 1 + sum(1 for record in earlier if record.get("tool") == self.tool)
        self.said: list[str] = []
        self.wrote: list[str] = []
        self.code, self.printed, self.cost = 0, False, 0.0125
        self.record: dict[str, Any] = {"argv": argv, "prompt": self.prompt, "cwd": os.getcwd(), "env": dict(os.environ),
                                       "pid": os.getpid(), "ppid": os.getppid(),
                                       "executable": sys.executable,
                                       "resume": self.resume, "tool": self.tool, "run": self.number, "steps": []}
        self.save()
        (self.out / f"{self.task}.prompt").write_text(self.prompt, encoding="utf-8")

    def save(self) -> None:
        path = self.out / f"{self.task}.run-{self.number}.json"
        path.write_text(json.dumps(self.record, indent=1), encoding="utf-8")

    def event(self, word: str) -> None:
        with open(self.out / "events.log", "a", encoding="utf-8") as handle:
            handle.write(f"{word} {time.time():.6f} {self.tool} {self.task}\n")

    def applies(self, step: dict[str, Any]) -> bool:
        return step.get("tool", self.tool) == self.tool and int(step.get("run", self.tool_run)) == self.tool_run

    def prompt_without_script(self) -> str:
        return LINE.sub("", self.prompt)


def _write(path: str, text: str, mode: str = "w", parents: bool = True) -> None:
    target = Path(path)
    if parents:
        target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, mode, encoding="utf-8") as handle:
        handle.write(text if text.endswith("\n") else text + "\n")
    if text.startswith("#!"):
        target.chmod(0o755)


def _delete(path: str) -> None:
    target = Path(path).absolute() if path != "." else Path(os.getcwd())
    if target.is_symlink() or target.is_file():
        target.unlink()
    else:
        shutil.rmtree(target)


def _symlink(path: str, target: str) -> None:
    link = Path(os.getcwd()) if path == "." else Path(path)
    if path == ".":
        shutil.rmtree(link)
    os.symlink(target, link)


def _edit(path: str, old: str, new: str) -> None:
    text = Path(path).read_text(encoding="utf-8")
    Path(path).write_text(text.replace(old, new), encoding="utf-8")


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    print(f"{' '.join(argv)} -> {done.returncode} {done.stderr.strip()}", flush=True)
    return f"exit {done.returncode}"


def _commit(message: str) -> None:
    subprocess.run(["git", "add", "--all"], check=True)
    subprocess.run(["git", *IDENTITY, "commit", "-q", "-m", message], check=True)


def _emit(count: int) -> None:
    chunk, out = (b"x" * 1023 + b"\n") * 1024, sys.stdout.buffer
    while count > 0:
        out.write(chunk[:count])
        count -= len(chunk)
    out.flush()


def _conveyor_pids() -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if b"conveyor" in cmdline and b"fake-agent" not in cmdline and b"fake_agent" not in cmdline:
            found.append(int(entry))
    return found


def _signal(run: Run, target: str, name: str) -> str:
    number = getattr(signal, "SIG" + (name or "HUP"))
    pids = [os.getppid()] if target == "parent" else _conveyor_pids()
    run.record.setdefault("signalled", {})
    for pid in pids:
        run.record["signalled"][str(pid)] = _attempt(os.kill, pid, number)
    return "ok" if pids else "no process found"


def _spawn(task: str, how: str, seconds: str) -> None:
    sleeper = [sys.executable, "-c", f"import time; time.sleep({float(seconds or 300)})", f"conveyor-grandchild-{task}"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if how == "setsid":
        subprocess.Popen(sleeper, start_new_session=True, **quiet)  # type: ignore[call-overload]
    elif how == "double-fork":                   # reparented, still in our process group
        if os.fork() == 0:
            if os.fork() == 0:
                os.execv(sys.executable, sleeper)
            os._exit(0)
        os.wait()
    else:
        subprocess.Popen(sleeper, **quiet)  # type: ignore[call-overload]


def _child_env(run: Run) -> None:
    out = run.out / f"{run.task}.child-env.json"
    code = f"import json, os; open({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))"
    subprocess.run([sys.executable, "-c", code], check=True)


def _query(run: Run, db: str, sql: str, params: list[Any]) -> None:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = [list(row) for row in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()
    run.record.setdefault("queries", []).append(rows)


def _attempt(action: Any, *args: Any) -> str:
    try:
        result = action(*args)
    except Exception as exc:  # the point of a hostile step is to record why it failed
        return f"{type(exc).__name__}: {exc}"
    return result if isinstance(result, str) else "ok"


def _fixture(name: str) -> Path:
    here = Path(__file__).resolve().parent
    for folder in (here / "agent-output", here.parent / "fixtures" / "agent-output"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"no captured output {name} beside {here}")


def _say(run: Run, text: str) -> None:
    run.said.append(text)


def _print(run: Run, text: str, stream: str) -> None:
    print(text, file=sys.stderr if stream == "stderr" else sys.stdout, flush=True)
    run.printed = True


def _set_exit(run: Run, code: int) -> None:
    run.code = code


def _kill_self(name: str) -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), getattr(signal, "SIG" + (name or "KILL")))


def _ask(question: str) -> None:
    raise Stop(0, f"I need to know this first.\nNEEDS_INPUT: {question}", plain=True)


def _require(path: str) -> None:
    if not Path(path).exists():
        raise Stop(4, f"missing {path}", plain=True)


def _api_error(status: int, retry: str | None) -> None:
    text = API_ERRORS.get(status, f"API Error: {status} server error")
    raise Stop(1, text + (f", try again in {retry} seconds" if retry else ""), status)


def _replay(fixture: str, code: int) -> None:
    sys.stdout.write(_fixture(fixture).read_text(encoding="utf-8"))
    sys.stdout.flush()
    raise Stop(code, "", -1)


def _expect_resume(run: Run, session: str | None) -> None:
    if run.resume != (session or None):
        raise Stop(3, f"expected --resume {session or None}, got {run.resume}", 0)


def _expect_prompt(run: Run, text: str) -> None:
    if text not in run.prompt_without_script():
        raise Stop(3, f"the prompt lacks {text!r}", 0)


def _wrote(run: Run, path: str, text: str | None, parents: bool) -> str:
    run.wrote.append(f"wrote {path}")
    return _attempt(_write, path, text or f"written by the fake agent for {run.task}", "w", parents)


Action = Callable[[Run, dict[str, Any]], Any]
ACTIONS: dict[str, Action] = {
    "write": lambda run, s: _wrote(run, s["path"], s.get("text"), bool(s.get("parents", True))),
    "append": lambda run, s: _attempt(_write, s["path"], s.get("text") or run.task, "a"),
    "delete": lambda run, s: _attempt(_delete, s["path"]),
    "symlink": lambda run, s: _attempt(_symlink, s["path"], s["target"]),
    "edit": lambda run, s: _attempt(_edit, s["path"], s["old"], s["new"]),
    "run": lambda run, s: _attempt(_run, list(s["argv"])),
    "commit": lambda run, s: _attempt(_commit, s.get("message") or "fake agent commit"),
    "sleep": lambda run, s: time.sleep(float(s["seconds"])),
    "print": lambda run, s: _print(run, str(s.get("text", "")), s.get("stream", "stdout")),
    "emit": lambda run, s: _emit(int(s["bytes"])),
    "say": lambda run, s: _say(run, str(s.get("text", ""))),
    "cost": lambda run, s: setattr(run, "cost", float(s["usd"])),
    "ask": lambda run, s: _ask(s.get("question", "")),
    "require": lambda run, s: _require(s["path"]),
    "exit": lambda run, s: _set_exit(run, int(s["code"])),
    "kill": lambda run, s: _kill_self(s.get("signal", "KILL")),
    "signal": lambda run, s: _signal(run, s.get("target", "parent"), s.get("signal", "HUP")),
    "spawn": lambda run, s: _attempt(_spawn, run.task, s.get("how", "child"), s.get("seconds", "300")),
    "child-env": lambda run, s: _attempt(_child_env, run),
    "query": lambda run, s: _query(run, s["db"], s["sql"], list(s.get("params", [run.task]))),
    "api-error": lambda run, s: _api_error(int(s["status"]), s.get("retry")),
    "replay": lambda run, s: _replay(s["fixture"], int(s.get("code", 0))),
    "expect-resume": lambda run, s: _expect_resume(run, s.get("session")),
    "expect-prompt": lambda run, s: _expect_prompt(run, s["text"]),
}


def act(run: Run, step: dict[str, Any]) -> str:
    """Do one step; returns its outcome, or raises Stop to end the run."""
    action = ACTIONS.get(str(step.get("do")))
    if action is None:
        raise Stop(3, f"the fake agent has no step {step}", 0)
    outcome = action(run, step)
    return outcome if isinstance(outcome, str) else "ok"


def _claude_result(run: Run, text: str, error: bool, status: int | None) -> dict[str, Any]:
    return {"type": "result", "subtype": "success", "is_error": error, "result": text,
            "session_id": f"session-{run.task}", "num_turns": 3, "total_cost_usd": run.cost, "usage": USAGE,
            "modelUsage": {MODEL: {"inputTokens": 1200, "outputTokens": 340, "cacheReadInputTokens": 50,
                                   "cacheCreationInputTokens": 7}},
            "permission_denials": [], "terminal_reason": "api_error" if status else "completed",
            "api_error_status": status}


def finish(run: Run, text: str, code: int, status: int | None, plain: bool = False) -> None:
    """Print the end of the run in the output mode, as the real CLI would."""
    error = code != 0
    if run.mode == "text":
        if status:
            print(text, file=sys.stderr, flush=True)
        elif plain or (text and not (run.printed and text == NOTHING)):
            print(text if plain else f"fake agent: {text}", flush=True)
        return
    if status and status > 0 and run.mode.startswith("claude"):
        text = f"API Error: Request rejected ({status}) · " + ("rate limit reached" if status == 429 else text)
    lines: list[dict[str, Any]] = []
    if run.mode == "claude-stream-json":
        lines.append({"type": "system", "subtype": "init", "cwd": os.getcwd(), "session_id": f"session-{run.task}",
                      "model": MODEL, "tools": ["Bash", "Edit", "Read", "Write"]})
        lines.append({"type": "assistant", "session_id": f"session-{run.task}",
                      "message": {"role": "assistant", "model": MODEL, "content": [{"type": "text", "text": text}]}})
    if run.mode.startswith("claude"):
        lines.append(_claude_result(run, text, error, status))
    else:
        lines += [{"type": "thread.started", "thread_id": f"session-{run.task}"}, {"type": "turn.started"}]
        if error:
            lines += [{"type": "error", "message": text}, {"type": "turn.failed", "error": {"message": text}}]
        else:
            lines += [{"type": "item.completed", "item": {"id": "item_0", "type": "agent_message", "text": text}},
                      {"type": "turn.completed", "usage": {"input_tokens": 1250, "cached_input_tokens": 50,
                                                           "output_tokens": 340}}]   # input counts the cached
    for line in lines:
        print(json.dumps(line), flush=True)


def main(argv: list[str]) -> int:
    if argv == ["--version"]:
        print("fake-agent 1.0 (test double)")
        return 0
    run = Run(argv)
    run.event("start")
    steps, from_file = script_of(run.prompt, run.task)
    mine = [step for step in steps if run.applies(step)]
    code, status, text, plain = 0, None, "", False
    try:
        if from_file and steps and not mine and all("run" in step for step in steps):
            raise Stop(3, f"script exhausted: run {run.tool_run}", 0)
        for step in mine:
            run.record["steps"].append({**step, "outcome": act(run, step)})
            run.save()
        code, text = run.code, "; ".join(run.said or run.wrote) or NOTHING
    except Stop as stop:
        code, text, status, plain = stop.code, stop.text, stop.status, stop.plain
    run.save()
    if status != -1:
        finish(run, text, code, status or None, plain)
    run.event("end")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
