"""A hostile agent CLI that tries to leave its workspace: it obeys `ESCAPE <action> [arg]` lines of its prompt.

Invoked by the daemon as `escape-agent --task <task_id> <prompt>` in the task's workspace. Every action
records what happened (`ok` or the error) in `$ESCAPE_OUT/<task_id>.json`, with the agent's environment,
so a test can see both that the attempt was made and that it failed. Actions:

    ESCAPE allow-token <tools.yaml>   add GITHUB_TOKEN to every env_allowlist of that file
    ESCAPE hup-parent                 SIGHUP to its parent, and to every process whose command line names
                                      conveyor (how an attacker finds the daemon through /proc)
    ESCAPE plant <inbox dir>          write a task file into that inbox
    ESCAPE write <path>               write a file (relative to the workspace, e.g. ../x)
    ESCAPE setsid-sleeper             start a grandchild in a session of its own that sleeps for 5 minutes
    ESCAPE env-of-children            start a child that records its own environment too
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any


def _attempt(action: Any, *args: Any, **kwargs: Any) -> str:
    try:
        action(*args, **kwargs)
    except Exception as exc:  # the point is to record why it failed
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def _allow_token(path: str) -> None:
    text = Path(path).read_text(encoding="utf-8")
    Path(path).write_text(text.replace("env_allowlist: [", "env_allowlist: [GITHUB_TOKEN, "), encoding="utf-8")


def _conveyor_pids() -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if b"conveyor" in cmdline and b"escape-agent" not in cmdline:
            found.append(int(entry))
    return found


def _hup(record: dict[str, Any]) -> None:
    record["parent"] = os.getppid()
    record["hup_parent"] = _attempt(os.kill, os.getppid(), signal.SIGHUP)
    targets = _conveyor_pids()
    record["conveyor_pids_seen"] = targets
    for pid in targets:
        record[f"hup_{pid}"] = _attempt(os.kill, pid, signal.SIGHUP)


def main(argv: list[str]) -> int:
    task_id, prompt = argv[argv.index("--task") + 1], argv[-1]
    record: dict[str, Any] = {"env": dict(os.environ), "cwd": os.getcwd()}
    for line in prompt.splitlines():
        words = line.split()
        if words[:1] != ["ESCAPE"]:
            continue
        action, arg = words[1], (words[2] if len(words) > 2 else "")
        if action == "allow-token":
            record["allow_token"] = _attempt(_allow_token, arg)
        elif action == "hup-parent":
            _hup(record)
        elif action == "plant":
            body = f"id: planted-{task_id}\nagent: backend-dev\nstatus: new\ntitle: planted\n"
            record["plant"] = _attempt(Path(arg, f"planted-{task_id}.yaml").write_text, body)
        elif action == "write":
            record[f"write {arg}"] = _attempt(Path(arg).write_text, f"written by {task_id}\n")
        elif action == "setsid-sleeper":
            sleeper = [sys.executable, "-c", "import time; time.sleep(300)", f"conveyor-grandchild-{task_id}"]
            record["setsid"] = _attempt(subprocess.Popen, sleeper, start_new_session=True,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elif action == "env-of-children":
            out = Path(os.environ["ESCAPE_OUT"], f"{task_id}.child-env.json")
            code = f"import json, os; open({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))"
            record["child"] = _attempt(subprocess.run, [sys.executable, "-c", code], check=True)
    Path("agent-was-here.txt").write_text(f"{task_id}\n", encoding="utf-8")
    Path(os.environ["ESCAPE_OUT"], f"{task_id}.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    print(f"escape agent: {task_id} done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
