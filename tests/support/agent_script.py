"""Writing scripts for the fake agent CLI (`tests/support/fake_agent.py`, whose docstring is the format),
installing it as tools.yaml would name a real CLI, and reading what its runs recorded."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import fake_agent

SOURCE = Path(fake_agent.__file__).resolve()
CAPTURED = SOURCE.parent.parent / "fixtures" / "agent-output"


def act(kind: str, **fields: Any) -> dict[str, Any]:
    """One step of a script, as a JSON object."""
    return {"do": kind, **fields}


def step(kind: str, **fields: Any) -> str:
    """One prompt line of the script: `FAKE {"do": kind, ...}` (for fields a shorthand line cannot carry)."""
    return "FAKE " + json.dumps(act(kind, **fields))


def work(files: dict[str, str], say: str | None = None) -> list[dict[str, Any]]:
    """Steps that write these files and then say `say` (the usual honest run)."""
    return [act("write", path=path, text=text) for path, text in files.items()] + \
        ([act("say", text=say)] if say is not None else [])


def resuming(session: str | None) -> dict[str, Any]:
    """A step that fails the run unless it resumes `session` (None: unless it starts afresh)."""
    return act("expect-resume", session=session or "")


def prompted(*texts: str) -> list[dict[str, Any]]:
    """Steps that fail the run unless its prompt holds each text (what the daemon fed back, say)."""
    return [act("expect-prompt", text=text) for text in texts]


def runs(*each: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A file script of several runs: every step of the n-th list gets `"run": n`."""
    bad = [one for steps in each for one in steps if not isinstance(one, dict)]
    assert not bad, f"each run is a list of steps (dicts from act/work/...), not {bad[:1]!r}"
    return [{**one, "run": number} for number, steps in enumerate(each, start=1) for one in steps]


def write_script(folder: Path, task_id: str, steps: list[dict[str, Any]]) -> None:
    """The file script of one task, for an agent whose tools.yaml env names `folder` as FAKE_AGENT_SCRIPTS."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{task_id}.json").write_text(json.dumps(steps), encoding="utf-8")


def script(*steps: str) -> str:
    """Prompt lines (a task description) from `step(...)` results and shorthand lines."""
    return "\n".join(steps)


def install_fake_agent(bin_dir: Path, name: str = "fake-agent", interpreter: str = sys.executable) -> Path:
    """The fake agent as an executable whose `#!` names `interpreter` (as an installed CLI's would), with
    the captured outputs of the real CLIs beside it for `replay` steps (the sandbox shows the agent its folder)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    target = bin_dir / name
    target.write_text(f"#!{interpreter}\n" + SOURCE.read_text(encoding="utf-8"), encoding="utf-8")
    target.chmod(0o755)
    if not (bin_dir / "agent-output").exists():
        shutil.copytree(CAPTURED, bin_dir / "agent-output")
    return target


def tool_entry(binary: Path, out: Path, *, tool: str = "fake", output: str = "text",
               **settings: Any) -> dict[str, Any]:
    """A tools.yaml entry running the fake agent under the name `tool` (FAKE_AGENT_TOOL), recording in `out`;
    `output` is both its output mode and the parser that reads it. `settings` are more tools.yaml keys; their
    `env` adds to the agent's own variables, an `env_allowlist` of their own still lets those through."""
    flags = [] if output == "text" else ["--output", output]
    env = {"FAKE_AGENT_OUT": str(out), "FAKE_AGENT_TOOL": tool, **settings.pop("env", {})}
    allow = settings.pop("env_allowlist", ["PATH", "HOME", "LANG", "FAKE_*"])
    entry: dict[str, Any] = {"binary": str(binary), "argv": [*flags, "--task", "{task_id}", "{prompt}"],
                             "parser": output, "env": env, "sandbox_writable": [str(out)],
                             "env_allowlist": [*allow, *(name for name in env if name not in allow)]}
    entry.update(settings)
    return entry


@dataclass(frozen=True)
class AgentRecords:
    """What the fake agent's runs recorded in its out folder."""

    out: Path

    def runs(self, task_id: str) -> list[dict[str, Any]]:
        found = sorted(self.out.glob(f"{task_id}.run-*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
        return [json.loads(path.read_text(encoding="utf-8")) for path in found]

    def last(self, task_id: str) -> dict[str, Any]:
        runs = self.runs(task_id)
        assert runs, f"the fake agent never ran {task_id} (nothing in {self.out})"
        return runs[-1]

    def outcomes(self, task_id: str) -> dict[str, str]:
        """The last run's steps, `do` and `path` or `target` (`write ../x`, `signal parent`): `ok` or the error."""
        return {" ".join(str(s[k]) for k in ("do", "path", "target") if k in s): s["outcome"]
                for s in self.last(task_id)["steps"]}

    def started(self) -> list[str]:
        """Task ids in the order their runs started (one per run that really happened)."""
        return [task for word, _, _, task in self.events() if word == "start"]

    def count(self, task_id: str) -> int:
        return len(list(self.out.glob(f"{task_id}.run-*.json")))

    def events(self) -> list[tuple[str, float, str, str]]:
        path = self.out / "events.log"
        if not path.exists():
            return []
        rows = [line.split() for line in path.read_text(encoding="utf-8").splitlines()]
        return [(word, float(at), tool, task) for word, at, tool, task in rows]
