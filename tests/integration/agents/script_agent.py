"""A scripted agent CLI for the board-hygiene tests: it obeys `SCRIPT <action> ...` lines of its prompt.

Invoked by the daemon as `script-agent --task <task_id> <prompt>` (argv from tools.yaml), in the task's
worktree. Actions, in prompt order:

    SCRIPT write <path> [text...]   write a file in the worktree
    SCRIPT print <text...>          print one line of the final text (a hand-off needs several lines)
    SCRIPT require <path>           exit 4 unless <path> exists (a follow-up must see its parent's work)
    SCRIPT sleep-first <seconds>    sleep, on the task's first run only (to stop the daemon meanwhile)
    SCRIPT exit <code>              exit with <code> after the other actions

Every run appends its task id to $SCRIPT_AGENT_LOG, so a test can count runs per task. With no action
and SCRIPT_DEFAULT_WRITE=1 it writes agent/<task_id>.txt (for roadmaps the test must not edit).
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

DIRECTIVE = re.compile(r"^\s*SCRIPT (\S+)(?: (.*))?$", re.MULTILINE)


def main(argv: list[str]) -> int:
    task_id, prompt = argv[argv.index("--task") + 1], argv[-1]
    log = os.environ.get("SCRIPT_AGENT_LOG")
    runs = 1
    if log:
        with open(log, "a+", encoding="utf-8") as handle:
            handle.write(task_id + "\n")
            handle.seek(0)
            runs = handle.read().split().count(task_id)
    directives = DIRECTIVE.findall(prompt)
    if not directives and os.environ.get("SCRIPT_DEFAULT_WRITE") == "1":
        directives = [("write", f"agent/{task_id}.txt")]
    print(f"script agent ran {task_id}", flush=True)
    code = 0
    for action, arg in directives:
        arg = arg.strip()
        if action == "write":
            path, _, text = arg.partition(" ")
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text((text or f"by {task_id}") + "\n", encoding="utf-8")
        elif action == "print":
            print(arg, flush=True)
        elif action == "require" and not Path(arg).exists():
            print(f"missing {arg}", flush=True)
            return 4
        elif action == "sleep-first" and runs == 1:
            time.sleep(float(arg))
        elif action == "exit":
            code = int(arg)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
