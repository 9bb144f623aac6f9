"""Issue 16, the first hour in a person's own repository: no surprise spend, retry while the daemon runs,
verify set-up problems found before any agent round, doctor that fails when nothing can run, settings that
stick. Real git repositories, the real daemon loop on a thread, the fake agent CLI as a real process."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from conveyor.core import yamlio
from tests.conftest import git
from tests.integration.conftest import DAEMON_YAML, Repo
from tests.integration.test_cli import Cli, cli  # noqa: F401  (the in-process `conveyor` fixture)
from tests.support.waiting import wait_for

PLANNED = """\
# Roadmap

### 🔴 **PRIORITY 1: Something the team wrote down**

**Status**: 📝 Planned

FAKE write src/one.txt one
"""


def test_an_existing_roadmap_does_not_start_until_it_is_turned_on(repo: Repo, cli: Cli) -> None:  # noqa: F811
    repo.write_config("daemon.yaml", DAEMON_YAML.replace("roadmap: {enabled: false}\n", ""))   # the default
    (repo.path / "ROADMAP.md").write_text(PLANNED, encoding="utf-8")
    doctor = cli("doctor", cwd=repo.path)
    assert "roadmap off (roadmap.enabled: false): the 1 Planned item(s) of ROADMAP.md" in doctor.out
    assert "each one is an agent run: it spends money" in doctor.out
    run = repo.run_once()
    assert run.code == 0 and not run.events("roadmap.task_created")
    assert (repo.path / "ROADMAP.md").read_text(encoding="utf-8") == PLANNED          # never rewritten
    repo.write_config("daemon.yaml", DAEMON_YAML.replace("roadmap: {enabled: false}", "roadmap: {enabled: true}"))
    doctor = cli("doctor", cwd=repo.path)
    assert "roadmap on: starts PRIORITY 1" in doctor.out and "at once" in doctor.out


def test_retry_puts_a_failed_task_back_while_the_daemon_runs(repo: Repo, cli: Cli) -> None:  # noqa: F811
    repo.submit("flaky", description="FAKE exit@1 3\nFAKE write src/flaky.txt ok")
    with repo.serving():
        wait_for(lambda: repo.done_path("flaky").exists(), what="the first run to fail")
        assert repo.done_doc("flaky")["status"] == "error"
        result = cli("task", "retry", "flaky", cwd=repo.path)
        assert result.code == 0, result.err
        assert "back in inbox/" in result.out
        wait_for(lambda: repo.done_path("flaky").exists() and repo.done_doc("flaky")["status"] == "done",
                 what="the retried task to finish")
        document = repo.done_doc("flaky")
        assert document["retries"][0]["status"] == "error" and "result" in document
        assert not list(repo.rejected.glob("flaky*")) if repo.rejected.exists() else True
    again = cli("task", "retry", "nope", cwd=repo.path)
    assert again.code == 1 and "no task 'nope' on the board" in again.err


def test_a_moved_file_is_taken_while_the_daemon_runs(repo: Repo) -> None:
    repo.submit("moved", description="FAKE exit@1 3\nFAKE write src/moved.txt ok")
    with repo.serving():
        wait_for(lambda: repo.done_path("moved").exists(), what="the first run to fail")
        document = yamlio.loads(repo.done_path("moved").read_bytes())
        for key in ("status", "error", "completed_at", "attempt", "claimed_by", "started_at", "assigned_at"):
            document.pop(key, None)
        target = repo.inbox / "moved.yaml"
        yamlio.write_yaml(repo.board / ".moved.tmp", document)
        repo.done_path("moved").unlink()
        os.rename(repo.board / ".moved.tmp", target)
        wait_for(lambda: repo.done_path("moved").exists(), what="the moved task to finish")
        assert repo.done_doc("moved")["status"] == "done"


def test_unrunnable_verify_commands_are_set_up_errors(repo: Repo, cli: Cli) -> None:  # noqa: F811
    task = repo.drop("shelly.yaml", repo.task_text("shelly", verify=["true && echo ok"]))
    result = cli("task", "validate", str(task), cwd=repo.path)
    assert result.code == 1
    assert "holds the shell operator '&&'" in result.out and "sh -c" in result.out
    missing = cli("submit", "-a", "dev", "-t", "x", "--verify", "conveyor-no-such-test-runner -q", cwd=repo.path)
    assert missing.code == 2 and "is not on verify's PATH" in missing.err
    typo = cli("submit", "-a", "dev", "-t", "x", "--tool", "fakee", cwd=repo.path)
    assert typo.code == 2 and "did you mean 'fake'?" in typo.err and "known tools:" in typo.err
    dep = cli("submit", "-a", "dev", "-t", "x", "--depends-on", "no-such-task", cwd=repo.path)
    assert dep.code == 2 and "no task 'no-such-task' on the board" in dep.err
    ok = cli("submit", "-a", "dev", "-t", "x", cwd=repo.path)
    assert ok.code == 0 and "no daemon is running" in ok.err
    repo.write_config("daemon.yaml", DAEMON_YAML + 'verify: [".venv/bin/python -m pytest -q"]\n')
    bad = cli("config", "validate", cwd=repo.path)
    assert bad.code == 2 and "not in the repository" in bad.err


def test_verify_runs_in_the_repositorys_virtualenv(repo: Repo, cli: Cli) -> None:  # noqa: F811
    """The repository's `.venv` leads verify's PATH and is its VIRTUAL_ENV. (The check proves it by its exit
    code: verify runs in the agent's sandbox, where it cannot write outside the workspace.)"""
    venv_bin = repo.path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (repo.path / ".gitignore").write_text(".venv/\n", encoding="utf-8")
    checker = venv_bin / "project-check"
    expected = repo.path / ".venv"
    script = f'#!/bin/sh\n[ "$VIRTUAL_ENV" = "{expected}" ] || {{ echo "VIRTUAL_ENV=$VIRTUAL_ENV"; exit 1; }}\n'
    checker.write_text(script, encoding="utf-8")
    checker.chmod(0o755)
    repo.write_config("daemon.yaml", DAEMON_YAML + 'verify: ["project-check --strict"]\n')
    assert cli("config", "validate", cwd=repo.path).code == 0
    doctor = cli("doctor", cwd=repo.path)
    assert f"{venv_bin} first on PATH" in doctor.out
    repo.submit("venv", description="FAKE write src/venv.txt hi")
    repo.run_once()
    document = repo.done_doc("venv")
    assert document["status"] == "done", document.get("error")
    assert {"check": "verify: project-check --strict", "result": "passed"}.items() <= \
        next(check for check in document["result"]["checks"] if check["check"].startswith("verify:")).items()


def test_doctor_fails_when_no_routed_tool_can_run(repo: Repo, cli: Cli) -> None:  # noqa: F811
    repo.write_config("agents.yaml", "agents:\n  default: {tool: ghost}\n")
    result = cli("doctor", cwd=repo.path)
    assert result.code == 1
    assert "✘ agents can run" in result.out and "no task can run" in result.out


def test_doctor_checks_the_remote_and_pull_requests(repo: Repo, cli: Cli, tmp_path: Path,  # noqa: F811
                                                    monkeypatch: object) -> None:
    repo.write_config("daemon.yaml", DAEMON_YAML.replace("remote: {name: null, push: false}\n", "")
                      .replace("pull_requests: {enabled: false}\n", ""))
    result = cli("doctor", cwd=repo.path)
    assert "! remote" in result.out and "git remote add origin" in result.out
    remote = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(repo.path, "remote", "add", "origin", "https://github.com/someone/project.git")
    saved = os.environ.pop("GITHUB_TOKEN", None)
    try:
        result = cli("doctor", cwd=repo.path)
    finally:
        if saved is not None:
            os.environ["GITHUB_TOKEN"] = saved
    assert "✔ remote" in result.out and "origin (https://github.com/someone/project.git)" in result.out
    assert "! pull requests" in result.out and "$GITHUB_TOKEN is not set" in result.out


def test_init_config_dir_is_remembered_by_every_command(tmp_path: Path, cli: Cli) -> None:  # noqa: F811
    project = tmp_path / "project"
    project.mkdir()
    git(project, "init", "-q", "-b", "main")
    (project / "config").mkdir()
    (project / "config" / "app.yaml").write_text("port: 8080\n", encoding="utf-8")
    first = cli("init", cwd=project)
    assert "config/ already held your own files (app.yaml)" in first.out
    assert "The first `conveyor run`:" in first.out
    for name in ("daemon.yaml", "agents.yaml", "tools.yaml", "models.yaml", "policies.yaml"):
        (project / "config" / name).unlink()
    second = cli("init", "--config-dir", ".conveyor", cwd=project)
    assert second.code == 0 and "remembered" in second.out
    assert (project / ".conveyor" / "daemon.yaml").is_file()
    assert not (project / "config" / "daemon.yaml").exists()
    validate = cli("config", "validate", cwd=project)
    assert validate.code == 0 and f"configuration OK ({project / '.conveyor'})" in validate.out
    doctor = cli("doctor", cwd=project)
    assert f"✔ config                   {project / '.conveyor'}" in doctor.out


def test_board_files_keep_readable_modes(tmp_path: Path) -> None:
    path = tmp_path / "AGENT_STATUS.md"
    yamlio.atomic_write(path, "x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    path.chmod(0o600)
    yamlio.atomic_write(path, "y")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600      # a file's own mode is kept



def test_the_service_carries_credentials_in_an_owner_only_file_and_uninstall_leaves_nothing(
        repo: Repo, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    tools = yaml.safe_load((repo.path / "config" / "tools.yaml").read_text(encoding="utf-8"))
    tools["tools"]["fake"]["credentials_env"] = ["FAKE_API_KEY"]
    repo.write_config("tools.yaml", yaml.safe_dump(tools))
    monkeypatch.setenv("FAKE_API_KEY", "sk-fake-not-a-real-key")
    units = tmp_path / "units"
    rendered = cli("service", "render", cwd=repo.path).out
    assert "EnvironmentFile=-" in rendered and "sk-fake" not in rendered
    assert "Template:" not in rendered and "canonical copy" not in rendered     # notes for users only
    installed = cli("service", "install", "--no-manager", "--unit-dir", str(units), cwd=repo.path)
    assert installed.code == 0, installed.err
    env_file = repo.git_dir / "conveyor" / "service.env"
    assert "Credentials for the service: FAKE_API_KEY" in installed.out and str(env_file) in installed.out
    assert "sk-fake" not in installed.out
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert env_file.read_text(encoding="utf-8") == 'FAKE_API_KEY="sk-fake-not-a-real-key"\n'
    (unit,) = units.glob("*.service")
    wants = units / "default.target.wants"
    wants.mkdir()
    (wants / unit.name).symlink_to(unit)          # what `systemctl --user enable` writes
    removed = cli("service", "uninstall", "--no-manager", "--unit-dir", str(units), cwd=repo.path)
    assert removed.code == 0, removed.err
    assert not unit.exists() and not (wants / unit.name).is_symlink() and not env_file.exists()


def test_an_artefact_the_agent_never_made_is_named_in_the_result(repo: Repo) -> None:
    repo.submit("half", description="FAKE write src/a.txt a", artefacts=["src/a.txt", "src/b.txt"])
    repo.run_once()
    result = repo.done_doc("half")["result"]
    assert result["artefacts_missing"] == ["src/b.txt"]
