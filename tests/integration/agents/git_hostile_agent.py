"""An agent CLI that does what a steered agent does with git: it obeys `HOSTILE <action> ...` lines.

Invoked by the daemon as `git-hostile-agent --task <task_id> <prompt>` in the task's workspace. Every run
records its environment as JSON in $HOSTILE_OUT/<task_id>.env.json. Actions, in prompt order:

    HOSTILE write <path> <text...>   write a file (text may use Python escapes: \\x1b, \\n; `#!` → executable)
    HOSTILE git <args...>            run git with these arguments here; a failure is only printed
    HOSTILE commit <message...>      `git add --all` and `git commit` with an identity of its own
    HOSTILE gitdir <path>            replace its .git with a `gitdir: <path>` file (as a linked worktree has)
    HOSTILE rmgit                    delete its .git
    HOSTILE rmself                   delete the whole workspace folder it runs in
    HOSTILE symlink-self <target>    ... and put a symlink to <target> in its place
    HOSTILE say <text...>            the final message (Python escapes decoded: \\x00, \\x1b, \\r)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

IDENTITY = ["-c", "user.name=Hostile Agent", "-c", "user.email=hostile@localhost"]


def _decode(text: str) -> str:
    return text.encode("utf-8").decode("unicode_escape")


def main(argv: list[str]) -> int:
    task_id, prompt = argv[argv.index("--task") + 1], argv[-1]
    out = Path(os.environ["HOSTILE_OUT"])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{task_id}.env.json").write_text(json.dumps(dict(os.environ)), encoding="utf-8")
    here = os.getcwd()
    said = "hostile agent: done"
    for line in prompt.splitlines():
        words = line.split(" ")
        if words[:1] != ["HOSTILE"] or len(words) < 2:
            continue
        action, args = words[1], words[2:]
        if action == "write":
            target = Path(here) / args[0]
            target.parent.mkdir(parents=True, exist_ok=True)
            text = _decode(" ".join(args[1:]))
            target.write_text(text + "\n", encoding="utf-8")
            if text.startswith("#!"):   # a script (a hook): executable
                target.chmod(0o755)
        elif action == "git":
            done = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, check=False)
            print(f"git {' '.join(args)} -> {done.returncode} {done.stderr.strip()}", flush=True)
        elif action == "commit":
            subprocess.run(["git", "add", "--all"], cwd=here, check=True)
            subprocess.run(["git", *IDENTITY, "commit", "-q", "-m", " ".join(args)], cwd=here, check=True)
        elif action == "gitdir":
            dot_git = Path(here) / ".git"
            shutil.rmtree(dot_git, ignore_errors=True)
            dot_git.write_text(f"gitdir: {args[0]}\n", encoding="utf-8")
        elif action == "rmgit":
            shutil.rmtree(Path(here) / ".git", ignore_errors=True)
        elif action == "rmself":
            shutil.rmtree(here)
        elif action == "symlink-self":
            shutil.rmtree(here)
            os.symlink(args[0], here)
        elif action == "say":
            said = _decode(" ".join(args))
    sys.stdout.write(said + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
