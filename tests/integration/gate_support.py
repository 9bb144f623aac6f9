"""Shared set-up for the completion gate and publishing tests: a repository after `conveyor init` whose agents
run the fake agent (`tests/support/fake_agent.py`) from file scripts, a real bare repository as `origin`,
and FakeGitHub.
"""

from __future__ import annotations

import json
import shlex
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import git
from tests.integration.conftest import DAEMON_CORE, Repo, make_repo
from tests.support.agent_script import runs, tool_entry, write_script
from tests.support.fake_github import FakeGitHub

GH_REPO = "octo/widgets"
TOKEN_ENV = "CONVEYOR_TEST_GH_TOKEN"
TOKEN = "ghs_conveyorTestToken0123456789abcdefXYZ"


def shared(out: Path, script_dir: Path) -> dict[str, Any]:
    return {"env": {"FAKE_AGENT_SCRIPTS": str(script_dir)}, "sandbox_writable": [str(out), str(script_dir)]}


def tools_yaml(agent_bin: Path, out: Path, script_dir: Path) -> str:
    """The fake agent as a CLI with sessions (claude's JSON, resumed with --resume) and as one without."""
    scripted = tool_entry(agent_bin, out, tool="scripted", output="claude-json", **shared(out, script_dir))
    flags = scripted["argv"][:-1]
    scripted["resume_argv"] = [*flags, "--resume", "{session_id}", "{prompt}"]
    plain = tool_entry(agent_bin, out, tool="scripted-plain", **shared(out, script_dir))
    return yaml.safe_dump({"tools": {"scripted": scripted, "scripted-plain": plain}}, sort_keys=False)


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
    return DAEMON_CORE.replace("attempts: 1", "attempts: 2") + textwrap.dedent(f"""\
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

    def script(self, task_id: str, *each_run: list[dict[str, Any]]) -> None:
        """What the agent does for this task, run by run (see tests/support/fake_agent.py)."""
        write_script(self.scripts, task_id, runs(*each_run))

    def invocations(self, task_id: str) -> list[dict[str, Any]]:
        return self.repo.agent.runs(task_id)

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
    repo.write_config("tools.yaml", tools_yaml(repo.agent_bin, repo.out, scripts))
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
