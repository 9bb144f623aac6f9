"""The bubblewrap sandbox around an agent run, with real bwrap and real processes: what the agent can see,
write and signal; its private home; and what `auto`, `bwrap` and `none` do where bubblewrap cannot run."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.config.models import ToolSettings
from conveyor.runner.bwrap import BwrapProbe
from conveyor.runner.process import run_process
from conveyor.runner.sandbox import SandboxContext, SandboxUnavailable, contain, plan
from conveyor.runner.types import ProcessSpec
from conveyor.setup.doctor import check_sandbox
from tests.conftest import git
from tests.integration.conftest import Repo, use_only
from tests.support.agent_script import install_fake_agent

PROBE = """\
import json, os, signal, sys
from pathlib import Path

def attempt(action):
    try:
        action()
    except Exception as exc:
        return type(exc).__name__
    return "ok"

out = {"env": dict(os.environ), "cwd": os.getcwd(), "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}
out["write_here"] = attempt(lambda: Path("new.txt").write_text("x"))
out["write_git"] = attempt(lambda: Path(".git/config").write_text("x") if Path(".git").is_dir()
                            else Path(".git").write_text("gitdir: /elsewhere\\n"))
out["write_up"] = attempt(lambda: Path("../beside.txt").write_text("x"))
out["see_sibling"] = os.listdir("..")
out["see_state"] = os.path.exists(sys.argv[1])
out["see_ssh"] = os.listdir(sys.argv[2]) if os.path.isdir(sys.argv[2]) else None
out["kill_daemon"] = attempt(lambda: os.kill(int(sys.argv[3]), 0))
home = Path(os.environ["HOME"])
out["write_home"] = attempt(lambda: (home / "note").write_text("x"))
out["credentials"] = (home / ".tool" / "creds.json").read_text() if (home / ".tool" / "creds.json").exists() else None
codex = os.environ.get("CODEX_HOME")
config = Path(codex or "/nonexistent") / "config.toml"
out["codex_config"] = config.read_text() if config.exists() else None
print(json.dumps(out))
"""


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """A repository with a state folder holding a 'database', two task worktrees, and a user home with keys."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("hello\n")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    state = repo / ".git" / "conveyor"
    state.mkdir()
    (state / "telemetry.db").write_text("prompts and costs")
    workspaces = tmp_path / "workspaces"
    for name in ("mine", "other"):
        git(repo, "worktree", "add", "-q", "-b", f"conveyor/{name}", str(workspaces / name))
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY")
    (home / ".tool").mkdir()
    (home / ".tool" / "creds.json").write_text('{"token": "t"}')
    (home / ".codex").mkdir()
    (home / ".codex" / "config.toml").write_text('model = "fake"\n')
    probe = tmp_path / "bin" / "probe"
    probe.parent.mkdir()
    probe.write_text(f"#!{sys.executable}\n" + PROBE)
    probe.chmod(0o755)
    return {"repo": repo, "state": state, "mine": workspaces / "mine", "home": home, "probe": probe}


def run_contained(tool: ToolSettings, layout: dict[str, Path], tmp_path: Path) -> dict[str, object]:
    env = {"PATH": os.environ["PATH"], "HOME": str(layout["home"]), "CODEX_HOME": str(layout["home"] / ".codex"),
           "LANG": "C.UTF-8"}
    argv = [str(layout["probe"]), str(layout["state"] / "telemetry.db"), str(layout["home"] / ".ssh"),
            str(os.getpid())]
    contained = contain("probe-tool", tool, argv, env, layout["mine"], SandboxContext(state_dir=layout["state"]))
    assert contained.report.kind == "bwrap", contained.report
    spec = ProcessSpec(argv=contained.argv, cwd=layout["mine"], env=contained.env, log_path=tmp_path / "probe.log",
                       timeout_s=60, idle_timeout_s=60)
    result = run_process(spec)
    text = (tmp_path / "probe.log").read_text()
    assert result.exit_code == 0, text
    document = json.loads(text.splitlines()[0])
    assert isinstance(document, dict)
    return document


def test_the_agent_writes_its_workspace_and_nothing_else(layout: dict[str, Path], tmp_path: Path) -> None:
    tool = ToolSettings(binary="probe", argv=[], credentials_files=["~/.tool/creds.json"], home_env=["CODEX_HOME"],
                        home_files=["$CODEX_HOME/config.toml"])
    seen = run_contained(tool, layout, tmp_path)
    assert seen["write_here"] == "ok" and (layout["mine"] / "new.txt").exists()
    assert seen["write_git"] == "OSError"                       # read-only file system
    assert seen["write_up"] == "OSError" and not (layout["mine"].parent / "beside.txt").exists()
    assert seen["see_sibling"] == ["mine"]                      # other tasks' workspaces are not there
    assert seen["see_state"] is False                           # nor the daemon's database
    assert seen["see_ssh"] == []                                # the user's keys are covered
    assert seen["kill_daemon"] == "ProcessLookupError"          # no pid outside its own namespace
    assert max(seen["pids"]) < 50                                # type: ignore[type-var]
    assert seen["cwd"] == str(layout["mine"].resolve())
    private = layout["state"] / "sandbox" / "probe-tool"
    inside = "/run/conveyor/home"                               # the private home, where the agent sees it
    assert seen["env"] == {"PATH": os.environ["PATH"], "HOME": inside,  # nothing added, not even PWD
                           "CODEX_HOME": f"{inside}/.codex", "LANG": "C.UTF-8"}
    assert seen["write_home"] == "ok" and (private / "note").exists()
    assert seen["credentials"] == '{"token": "t"}' and seen["codex_config"] == 'model = "fake"\n'
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert stat.S_IMODE((private / ".tool" / "creds.json").stat().st_mode) == 0o600
    assert (layout["home"] / ".tool" / "creds.json").read_text() == '{"token": "t"}'   # the original untouched


def test_a_newer_credentials_file_is_copied_again_and_an_older_one_is_not(layout: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    tool = ToolSettings(binary="probe", argv=[], credentials_files=["~/.tool/creds.json"])
    run_contained(tool, layout, tmp_path)
    copy = layout["state"] / "sandbox" / "probe-tool" / ".tool" / "creds.json"
    copy.write_text('{"token": "refreshed by the CLI"}')
    assert run_contained(tool, layout, tmp_path)["credentials"] == '{"token": "refreshed by the CLI"}'
    source = layout["home"] / ".tool" / "creds.json"
    source.write_text('{"token": "new login"}')
    later = copy.stat().st_mtime + 10
    os.utime(source, (later, later))
    assert run_contained(tool, layout, tmp_path)["credentials"] == '{"token": "new login"}'


def broken_bwrap(folder: Path) -> Path:
    """A bwrap that fails as it does where user namespaces are switched off."""
    folder.mkdir(parents=True, exist_ok=True)
    fake = folder / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    return folder


def test_auto_runs_uncontained_and_bwrap_refuses_where_bubblewrap_fails(tmp_path: Path) -> None:
    env = {"PATH": f"{broken_bwrap(tmp_path / 'fake')}:/usr/bin:/bin"}
    ctx = SandboxContext(state_dir=tmp_path / "state")
    decided = plan("codex", ToolSettings(binary="codex", argv=[]), env, ctx)
    assert decided.bwrap is None and "No permissions to creating new namespace" in decided.reason
    assert "tools.codex.sandbox is auto" in decided.reason
    with pytest.raises(SandboxUnavailable, match=r"tools\.codex\.sandbox is bwrap but .*set tools\.codex\.sandbox"):
        plan("codex", ToolSettings(binary="codex", argv=[], sandbox="bwrap"), env, ctx)
    none = plan("codex", ToolSettings(binary="codex", argv=[], sandbox="none"), env, ctx)
    assert none.bwrap is None and "tools.codex.sandbox is none" in none.reason


def test_macos_is_said_plainly_to_be_uncontained(tmp_path: Path) -> None:
    ctx = SandboxContext(state_dir=tmp_path, platform="darwin")
    decided = plan("claude-code", ToolSettings(binary="claude", argv=[]), {"PATH": "/usr/bin"}, ctx)
    assert decided.bwrap is None and "no sandbox on macOS" in decided.reason
    with pytest.raises(SandboxUnavailable, match="macOS"):
        plan("claude-code", ToolSettings(binary="claude", argv=[], sandbox="bwrap"), {"PATH": "/usr/bin"}, ctx)


def test_the_probe_asks_once(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    fake = tmp_path / "bwrap"
    fake.write_text(f"#!/bin/sh\necho run >> {counter}\nexit 0\n")
    fake.chmod(0o755)
    probe = BwrapProbe()
    assert probe.problem(fake) is None and probe.problem(fake) is None
    assert counter.read_text() == "run\n"


def use_tool(repo: Repo, sandbox: str) -> None:
    use_only(repo, repo.agent_bin, "fake", sandbox=sandbox)


def test_a_task_fails_with_the_fix_when_bwrap_is_demanded_but_cannot_run(repo: Repo, tmp_path: Path) -> None:
    use_tool(repo, "bwrap")
    repo.submit("t-demand", agent="backend-dev", description="FAKE write a.txt x")
    path = f"{broken_bwrap(tmp_path / 'fake')}:{os.environ['PATH']}"
    run = repo.run_once(env={"PATH": path})
    assert run.code == 0
    document = repo.done_doc("t-demand")
    assert document["status"] == "error"
    assert "tools.fake.sandbox is bwrap but" in document["error"]["message"]
    assert "set tools.fake.sandbox to auto or none in config/tools.yaml" in document["error"]["message"]


def test_auto_without_bubblewrap_runs_and_says_so_in_the_result(repo: Repo, tmp_path: Path) -> None:
    use_tool(repo, "auto")
    repo.submit("t-auto", agent="backend-dev", description="FAKE write a.txt x")
    run = repo.run_once(env={"PATH": f"{broken_bwrap(tmp_path / 'fake')}:{os.environ['PATH']}"})
    result = repo.done_doc("t-auto")["result"]
    assert result["sandbox"] == "none" and "runs uncontained" in result["sandbox_reason"]
    assert run.events("sandbox.none")


def test_a_task_in_the_sandbox_says_so_in_its_result(repo: Repo) -> None:
    repo.submit("t-boxed", agent="backend-dev", description="FAKE write a.txt x")
    repo.run_once()
    result = repo.done_doc("t-boxed")["result"]
    assert result["sandbox"] == "bwrap" and result["artefacts"] == ["a.txt"]


def test_a_script_cli_whose_virtualenv_lies_under_tmp_starts_in_the_sandbox(repo: Repo, tmp_path: Path) -> None:
    """A clone checked out under /tmp has its virtualenv there, which the sandbox's private /tmp hides: the
    fake agent, whose `#!` names that virtualenv's python, must still start (its interpreter is bound)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    assert str(venv).startswith("/tmp/")
    agent = install_fake_agent(tmp_path / "venv-bin", interpreter=str(venv / "bin" / "python"))
    use_only(repo, agent, "fake", sandbox="bwrap")
    repo.submit("t-venv", agent="backend-dev", description="FAKE write a.txt x")
    repo.run_once()
    document = repo.done_doc("t-venv")
    assert document["status"] == "done", document.get("error")
    assert document["result"]["sandbox"] == "bwrap" and document["result"]["artefacts"] == ["a.txt"]
    assert repo.agent.last("t-venv")["executable"] == str(venv / "bin" / "python")


def test_doctor_names_the_sandbox_of_each_tool(tmp_path: Path) -> None:
    ctx = SandboxContext(state_dir=tmp_path / "state")
    working = check_sandbox("codex", ToolSettings(binary="codex", argv=[]), {"PATH": os.environ["PATH"]}, ctx)
    assert (working.name, working.status) == ("sandbox codex", "ok") and "bwrap" in working.detail
    broken = {"PATH": f"{broken_bwrap(tmp_path / 'fake')}:/usr/bin:/bin"}
    fallback = check_sandbox("codex", ToolSettings(binary="codex", argv=[]), broken, ctx)
    assert fallback.status == "warn" and "runs uncontained" in fallback.detail
    demanded = check_sandbox("codex", ToolSettings(binary="codex", argv=[], sandbox="bwrap"), broken, ctx)
    assert demanded.status == "fail" and "set tools.codex.sandbox to auto or none" in demanded.detail
    mac = check_sandbox("codex", ToolSettings(binary="codex", argv=[]), broken,
                        SandboxContext(state_dir=tmp_path, platform="darwin"))
    assert mac.status == "warn" and "no sandbox on macOS" in mac.detail
