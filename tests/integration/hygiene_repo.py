"""A repository for the board-hygiene tests: `conveyor init` done, the scripted agent (agents/script_agent.py)
serving every agent, ROADMAP.md handling on, and helpers to read the roadmap, the board and the run log."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import yaml

from tests.integration.conftest import AGENTS_DIR, Repo, make_repo

DAEMON_YAML = """\
base_branch: main
max_parallel: 2
rescan_interval_s: 30
task_timeout_s: 60
idle_timeout_s: 60
kill_grace_s: 0.5
attempts: 1
drain_grace_s: 10
remote: {name: null, push: false}
pull_requests: {enabled: false}
"""
ROADMAP_ON = "roadmap: {enabled: true, default_agent: backend-dev, max_in_flight: 1}\n"
ROADMAP_OFF = "roadmap: {enabled: false}\n"
AGENTS_YAML = "agents:\n  default:\n    tool: script\n"


def install_script_agent(bin_dir: Path) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    target = bin_dir / "script-agent"
    target.write_text(f"#!{sys.executable}\n" + (AGENTS_DIR / "script_agent.py").read_text(encoding="utf-8"))
    target.chmod(0o755)
    return target


def hygiene_repo(root: Path, *, daemon_extra: str = ROADMAP_ON, agents_yaml: str = AGENTS_YAML) -> Repo:
    repo = make_repo(root)
    agent = install_script_agent(root / "script-bin")
    repo.write_config("daemon.yaml", DAEMON_YAML + daemon_extra)
    repo.write_config("agents.yaml", agents_yaml)
    repo.write_config("tools.yaml", textwrap.dedent(f"""\
        tools:
          script:
            binary: {agent}
            argv: [--task, "{{task_id}}", "{{prompt}}"]
            parser: text
            env_allowlist: [PATH, HOME, LANG, "SCRIPT_*"]
            sandbox_writable: ["$SCRIPT_AGENT_LOG"]
        """))
    repo.extra_env["SCRIPT_AGENT_LOG"] = str(root / "agent-runs.log")
    (root / "agent-runs.log").touch()   # a file the sandbox binds writable must exist
    return repo


def agent_runs(repo: Repo) -> list[str]:
    """Task ids in the order the scripted agent ran them."""
    log = Path(repo.extra_env["SCRIPT_AGENT_LOG"])
    return log.read_text(encoding="utf-8").split() if log.exists() else []


def roadmap_path(repo: Repo) -> Path:
    return repo.path / "ROADMAP.md"


def board_files(repo: Repo, prefix: str = "") -> list[Path]:
    """Every task file on the board (any folder, `_rejected` included) whose name starts with `prefix`."""
    return sorted(p for p in repo.board.rglob(f"{prefix}*.y*ml") if not p.name.endswith(".error.yaml"))


def load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document
