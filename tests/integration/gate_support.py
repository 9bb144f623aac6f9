"""Shared set-up for the completion gate and publishing tests: a repository after `conveyor init` whose agents
run the scripted agent (`agents/scripted_agent.py`), a real bare repository as `origin`, and FakeGitHub.
"""

from __future__ import annotations

import json
import shlex
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import git
from tests.integration.conftest import AGENTS_DIR, Repo, make_repo
from tests.support.fake_github import FakeGitHub

GH_REPO = "octo/widgets"
TOKEN_ENV = "CONVEYOR_TEST_GH_TOKEN"
TOKEN = "ghs_conveyorTestToken0123456789abcdefXYZ"


def install_scripted_agent(bin_dir: Path) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    target = bin_dir / "scripted-agent"
    target.write_text(f"#!{sys.executable}\n" + (AGENTS_DIR / "scripted_agent.py").read_text(encoding="utf-8"))
    target.chmod(0o755)
    return target


def tools_yaml(agent_bin: Path, script_dir: Path) -> str:
    env = f'{{SCRIPTED_AGENT_DIR: "{script_dir}"}}'
    return textwrap.dedent(f"""\
        tools:
          scripted:
            binary: {agent_bin}
            argv: [--task, "{{task_id}}", "{{prompt}}"]
            resume_argv: [--task, "{{task_id}}", --resume, "{{session_id}}", "{{prompt}}"]
            parser: claude-json
            env: {env}
            env_allowlist: [PATH, HOME, LANG, "SCRIPTED_*"]
            sandbox_writable: ["{script_dir}"]
          scripted-plain:
            binary: {agent_bin}
            argv: [--plain, --task, "{{task_id}}", "{{prompt}}"]
            parser: text
            env: {env}
            env_allowlist: [PATH, HOME, LANG, "SCRIPTED_*"]
            sandbox_writable: ["{script_dir}"]
        """)


AGENTS_YAML = """\
agents:
  default:
    tool: scripted
  plain-agent:
    tool: scripted-plain
"""


def daemon_yaml(*, remote: str | None = None, api_url: str = "http://127.0.0.1:9", verify: list[str] | None = None,
                verify_rounds: int = 2, draft: bool = False, privacy: str = "metadata") -> str:
    remote_value = "null" if remote is None else remote
    return textwrap.dedent(f"""\
        base_branch: main
        max_parallel: 2
        rescan_interval_s: 30
        task_timeout_s: 60
        idle_timeout_s: 60
        kill_grace_s: 0.5
        attempts: 2
        drain_grace_s: 10
        privacy: {privacy}
        verify: {json.dumps(verify or [])}
        verify_rounds: {verify_rounds}
        remote: {{name: {remote_value}, push: true}}
        pull_requests:
          enabled: true
          api_url: {api_url}
          repo: {GH_REPO}
          token_env: {TOKEN_ENV}
          draft: {str(draft).lower()}
          labels: [conveyor, bot]
        roadmap: {{enabled: false}}
        """)


def python_check(code: str) -> str:
    """A verify command that runs `code` with this interpreter, written as a user would in daemon.yaml."""
    return shlex.join([sys.executable, "-c", code])


@dataclass
class Project:
    """A repository wired to the scripted agent; optionally a bare `origin` and a FakeGitHub."""

    repo: Repo
    scripts: Path
    origin: Path | None = None
    github: FakeGitHub | None = None

    def configure(self, **settings: Any) -> None:
        api_url = self.github.api_url if self.github is not None else "http://127.0.0.1:9"
        remote = "origin" if self.origin is not None else None
        self.repo.write_config("daemon.yaml", daemon_yaml(remote=remote, api_url=api_url, **settings))

    def script(self, task_id: str, runs: list[dict[str, Any]]) -> None:
        (self.scripts / f"{task_id}.json").write_text(json.dumps(runs), encoding="utf-8")

    def invocations(self, task_id: str) -> list[dict[str, Any]]:
        found = sorted(self.scripts.glob(f"{task_id}.run-*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
        return [json.loads(path.read_text(encoding="utf-8")) for path in found]

    def run(self, *, token: bool = True) -> Any:
        return self.repo.run_once(env={TOKEN_ENV: TOKEN} if token else {TOKEN_ENV: ""})

    def remote_branches(self) -> list[str]:
        assert self.origin is not None
        out = git(self.origin, "for-each-ref", "--format=%(refname:short)", "refs/heads/")
        return [line for line in out.splitlines() if line]


def make_project(root: Path, *, with_remote: bool, github: FakeGitHub | None = None) -> Project:
    repo = make_repo(root)
    scripts = root / "scripts"
    scripts.mkdir()
    agent = install_scripted_agent(root / "bin")
    repo.write_config("tools.yaml", tools_yaml(agent, scripts))
    repo.write_config("agents.yaml", AGENTS_YAML)
    origin = None
    if with_remote:
        origin = root / "origin.git"
        git(root, "init", "-q", "--bare", "-b", "main", str(origin))
        repo.git("remote", "add", "origin", str(origin))
        repo.git("push", "-q", "origin", "main")
    project = Project(repo, scripts, origin, github)
    project.configure()
    return project


def fake_github(root: Path) -> FakeGitHub:
    """FakeGitHub for octo/widgets, refusing pull requests for branches `root/origin.git` lacks (use `with`)."""
    return FakeGitHub(token=TOKEN, repos=(GH_REPO,), remotes={GH_REPO: root / "origin.git"})
