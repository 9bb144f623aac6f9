"""Agents that use git against the user (issue 14, cases 1, 2, 3, 5, 6 and 8), run by the real daemon loop.

The agent is a real executable registered in tools.yaml (`tests/support/fake_agent.py`) doing one hostile
thing per test. Every test asserts that the user's checkout (HEAD, branches, index, working tree,
`.git/config`, hooks) is byte-identical before and after; that the result branch holds exactly the base
plus the agent's file changes, or the task failed with a named reason; and that no process the daemon
spawned (the agent, and every git command, through a `git` wrapper first on PATH) had a variable outside
its allowlist in its environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import git
from tests.integration.conftest import DAEMON_YAML, Repo, use_only
from tests.support.agent_script import step

TOKEN = "ghp_" + "T0kenTheAgentMustNeverSee" * 2
AGENT_ALLOWLIST = {"PATH", "HOME", "LANG", "FAKE_AGENT_OUT", "FAKE_AGENT_TOOL"}
GIT_ALLOWED = {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "XDG_CONFIG_HOME",
               "SSH_AUTH_SOCK", "PAGER", "SSH_ASKPASS", "PWD", "SHLVL", "_"}
TRAP = """#!/bin/sh
env > "{marker}.$$"
exit 0
"""


class World:
    """The repository, the hostile agent, a trap program and a `git` wrapper that records every env."""

    def __init__(self, repo: Repo, root: Path) -> None:
        self.repo = repo
        self.root = root
        self.envs = root / "git-envs"
        self.envs.mkdir()
        self.trap_marker = root / "trap-ran"
        self.trap = root / "bin" / "trap.sh"
        self.trap.write_text(TRAP.format(marker=self.trap_marker))
        self.trap.chmod(0o755)
        wrappers = root / "wrapped-bin"
        wrappers.mkdir()
        real_git = shutil.which("git")
        assert real_git is not None
        wrapper = wrappers / "git"
        wrapper.write_text(f'#!/bin/sh\nenv > "{self.envs}/$$.env"\nexec {real_git} "$@"\n')
        wrapper.chmod(0o755)
        self.path_value = f"{wrappers}:{os.environ.get('PATH', '')}"
        # uncontained: these cases test the daemon's own defences, which must hold where no sandbox does
        # (macOS, `sandbox: none`); in bubblewrap the agent could not even write its own .git
        use_only(repo, repo.agent_bin, "hostile", env_allowlist=["PATH", "HOME", "LANG"], sandbox="none")
        repo.git("add", "-A")
        repo.git("commit", "-q", "-m", "hostile tool")

    def run(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """One daemon pass with the token in its environment and the recording `git` first on PATH (only
        while it runs: the test's own git calls afterwards are not the daemon's)."""
        for old in self.envs.iterdir():
            old.unlink()
        plain = os.environ.get("PATH", "")
        monkeypatch.setenv("PATH", self.path_value)
        monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
        try:
            self.repo.run_once(env={"PATH": self.path_value, "GITHUB_TOKEN": TOKEN})
        finally:
            monkeypatch.setenv("PATH", plain)
            monkeypatch.delenv("GITHUB_TOKEN")

    def assert_no_env_leaked(self, task_id: str) -> None:
        agent_env = self.repo.agent.last(task_id)["env"]
        assert set(agent_env) <= AGENT_ALLOWLIST, set(agent_env) - AGENT_ALLOWLIST
        recorded = list(self.envs.iterdir())
        assert recorded, "the git wrapper saw no git command"
        for path in recorded:
            names = {line.split("=", 1)[0] for line in path.read_text().splitlines() if "=" in line}
            outside = {name for name in names
                       if name not in GIT_ALLOWED | AGENT_ALLOWLIST and not name.startswith(("GIT_", "LC_"))}
            assert outside == set(), (path.read_text(), outside)
            assert TOKEN not in path.read_text()
        assert not list(self.root.glob("trap-ran*")), "a program the agent configured was run"


def snapshot(repo: Path) -> dict[str, Any]:
    """Everything of the user's checkout but the board folder (the daemon moves task files there) and the
    task branches (the result, checked on its own)."""
    git_dir = repo / ".git"
    files: dict[str, str] = {}
    for path in sorted(repo.rglob("*")):
        relative = path.relative_to(repo).as_posix()
        if relative.startswith((".git/", "work/collaboration/")) or relative == ".git" or path.is_dir():
            continue
        files[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    hooks = {p.name: p.read_bytes() for p in sorted((git_dir / "hooks").iterdir())} \
        if (git_dir / "hooks").is_dir() else {}
    refs = [line for line in git(repo, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()
            if not line.startswith(("refs/heads/conveyor/", "refs/remotes/origin/conveyor/"))]
    return {"HEAD": (git_dir / "HEAD").read_bytes(), "refs": refs, "index": (git_dir / "index").read_bytes(),
            "config": (git_dir / "config").read_bytes(), "hooks": hooks, "files": files,
            "worktrees": git(repo, "worktree", "list", "--porcelain")}


def changed_on_branch(repo: Repo, branch: str) -> dict[str, str]:
    """The files the branch's one commit adds or changes relative to main, with their content."""
    assert repo.git("rev-parse", f"{branch}~1") == repo.git("rev-parse", "main"), "not one commit on the base"
    names = repo.git("diff", "--name-only", "main", branch).split()
    return {name: repo.git("show", f"{branch}:{name}") for name in names}


@pytest.fixture
def world(repo: Repo, tmp_path: Path) -> World:
    return World(repo, tmp_path)


def _dirty_the_users_checkout(repo: Repo) -> None:
    (repo.path / "README.md").write_text("the user's unsaved work\n")
    (repo.path / "staged.txt").write_text("staged by the user\n")
    repo.git("add", "staged.txt")
    (repo.path / "untracked.txt").write_text("the user's scratch\n")


# ------------------------------------------------------------------ case 1
def test_branch_switches_and_a_gitdir_pointing_at_the_users_repo_change_nothing_for_the_user(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = world.repo
    _dirty_the_users_checkout(repo)
    before = snapshot(repo.path)
    repo.submit("t-switch", description="\n".join([
        "FAKE run git checkout --ignore-other-worktrees main",
        "FAKE run git checkout -q -b main",
        "FAKE write a.txt from the agent",
        "FAKE commit on my own main",
        "FAKE delete .git",
        f"FAKE write .git gitdir: {repo.git_dir}",
        "FAKE write b.txt left uncommitted"]))
    world.run(monkeypatch)
    document = repo.done_doc("t-switch")
    assert document["status"] == "done", document
    assert changed_on_branch(repo, "conveyor/t-switch") == {"a.txt": "from the agent", "b.txt": "left uncommitted"}
    assert snapshot(repo.path) == before
    world.assert_no_env_leaked("t-switch")


# ------------------------------------------------------------------ case 2
@pytest.mark.parametrize("how", ["delete .", "symlink . {repo}"])
def test_a_workspace_removed_or_replaced_mid_run_fails_named_and_commits_nothing(
        world: World, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    repo = world.repo
    _dirty_the_users_checkout(repo)
    before = snapshot(repo.path)
    main = repo.git("rev-parse", "main")
    repo.submit("t-gone", description=f"FAKE write a.txt x\nFAKE {how.format(repo=repo.path)}")
    world.run(monkeypatch)
    document = repo.done_doc("t-gone")
    assert document["status"] == "error"
    assert document["error"]["kind"] == "workspace_gone"
    assert "nothing was committed" in document["error"]["message"]
    assert "conveyor/t-gone" not in repo.branches()
    assert repo.git("rev-parse", "main") == main
    assert snapshot(repo.path) == before
    assert not (repo.worktrees_dir / "t-gone").exists() and not (repo.worktrees_dir / "t-gone").is_symlink()
    world.assert_no_env_leaked("t-gone")


# ------------------------------------------------------------------ case 3
def test_configuration_the_agent_writes_runs_nothing_and_redirects_no_push(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = world.repo
    origin, elsewhere = world.root / "origin.git", world.root / "elsewhere.git"
    for bare in (origin, elsewhere):
        git(world.root, "init", "-q", "--bare", "-b", "main", str(bare))
    repo.git("remote", "add", "origin", str(origin))
    repo.git("push", "-q", "origin", "main")
    repo.write_config("daemon.yaml", DAEMON_YAML.replace("remote: {name: null, push: false}",
                                                         "remote: {name: origin, push: true}"))
    repo.git("commit", "-q", "-am", "push to origin")
    repo.git("push", "-q", "origin", "main")
    before = snapshot(repo.path)
    trap = world.trap
    hooks = "\n".join(step("write", path=f".git/hooks/{name}", text=f"#!/bin/sh\n{trap}\n") for name in
                      ("pre-commit", "post-commit", "reference-transaction", "post-checkout", "pre-push"))
    repo.submit("t-config", description="\n".join([
        "FAKE write a.txt the change",
        "FAKE write .gitattributes * filter=p diff=p",
        hooks,
        f"FAKE run git config core.hooksPath {world.root}",
        f"FAKE run git config core.fsmonitor {trap}",
        f"FAKE run git config filter.p.clean {trap}",
        f"FAKE run git config filter.p.smudge {trap}",
        "FAKE run git config filter.p.required true",
        f"FAKE run git config diff.p.textconv {trap}",
        f"FAKE run git config diff.external {trap}",
        f"FAKE run git config core.pager {trap}",
        f"FAKE run git config core.sshCommand {trap}",
        f"FAKE run git config credential.helper {trap}",
        f"FAKE run git remote add origin {elsewhere}",
        f"FAKE run git config remote.origin.pushurl {elsewhere}"]))
    for hook in (world.root / "pre-commit",):   # the hooksPath the agent named holds a trap as well
        hook.write_text(world.trap.read_text())
        hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    world.run(monkeypatch)
    document = repo.done_doc("t-config")
    assert document["status"] == "done", document
    assert document["result"]["publish"].startswith("pushed to 'origin'")
    assert changed_on_branch(repo, "conveyor/t-config") == {".gitattributes": "* filter=p diff=p",
                                                            "a.txt": "the change"}
    assert git(origin, "rev-parse", "conveyor/t-config") == repo.git("rev-parse", "conveyor/t-config")
    assert git(elsewhere, "for-each-ref") == ""                 # nothing went where the agent pointed
    assert snapshot(repo.path) == before                       # .git/config included: no remote changed
    world.assert_no_env_leaked("t-config")


# ------------------------------------------------------------------ case 5
def test_an_agent_that_commits_its_own_change_has_it_folded_into_one_commit(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = world.repo
    before = snapshot(repo.path)
    repo.submit("t-commits", description="\n".join([
        "FAKE write a.txt first", "FAKE commit agent commit one",
        "FAKE write b.txt second", "FAKE commit agent commit two"]))
    world.run(monkeypatch)
    document = repo.done_doc("t-commits")
    assert document["status"] == "done", document
    assert document["result"]["artefacts"] == ["a.txt", "b.txt"]
    assert changed_on_branch(repo, "conveyor/t-commits") == {"a.txt": "first", "b.txt": "second"}
    assert repo.git("log", "-1", "--format=%an", "conveyor/t-commits") == "Conveyor"
    assert snapshot(repo.path) == before
    world.assert_no_env_leaked("t-commits")


@pytest.mark.parametrize(("writes", "kind", "named"), [
    (["ROADMAP.md - [ ] planted", "work/collaboration/inbox/planted.yaml id: planted", "key.txt x"],
     "paths", ["ROADMAP.md", "work/collaboration/inbox/planted.yaml"]),
    (["settings.py GITHUB_TOKEN = 'ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8" + "'"], "secrets", ["settings.py"]),
])
def test_committed_protected_paths_and_secrets_are_caught_by_the_gate(
        world: World, monkeypatch: pytest.MonkeyPatch, writes: list[str], kind: str, named: list[str]) -> None:
    repo = world.repo
    before = snapshot(repo.path)
    lines = [f"FAKE write {write}" for write in writes]
    repo.submit("t-sneaky", description="\n".join([*lines, "FAKE commit all fine",
                                                   "FAKE write innocent.txt one more uncommitted change"]))
    world.run(monkeypatch)
    document = repo.done_doc("t-sneaky")
    assert document["status"] == "error"
    assert document["error"]["kind"] == kind
    for name in named:
        assert name in document["error"]["message"]
    assert "conveyor/t-sneaky" not in repo.branches()
    assert snapshot(repo.path) == before
    world.assert_no_env_leaked("t-sneaky")


def repository_with(path: Path, name: str, text: str) -> Path:
    """A new git repository at `path` whose one commit adds the file `name`."""
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / name).write_text(text)
    git(path, "add", name)
    git(path, "-c", "user.name=u", "-c", "user.email=u@localhost", "commit", "-q", "-m", f"add {name}")
    return path


# ------------------------------------------------------------------ case 6
def test_workspaces_inside_an_outer_repository_never_reach_it(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = world.repo
    home = repository_with(world.root / "home", ".bashrc", "# dotfiles\n")
    repo.write_config("daemon.yaml", DAEMON_YAML + f"worktrees_dir: {home / 'worktrees'}\n")
    repo.git("commit", "-q", "-am", "workspaces under home")
    outer_before = snapshot(home)
    before = snapshot(repo.path)
    repo.submit("t-outer", description="FAKE delete .git\nFAKE write a.txt inside")
    world.run(monkeypatch)
    document = repo.done_doc("t-outer")
    assert document["status"] == "done", document
    assert changed_on_branch(repo, "conveyor/t-outer") == {"a.txt": "inside"}
    assert snapshot(home) == outer_before
    assert git(home, "status", "--porcelain") == ""
    assert git(home, "rev-list", "--count", "HEAD") == "1"
    assert snapshot(repo.path) == before
    world.assert_no_env_leaked("t-outer")


# ------------------------------------------------------------------ case 8
def test_nul_and_escape_sequences_in_the_final_message_are_dropped_and_the_work_kept(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = world.repo
    repo.submit("t-nul", title="Title \x1b[2J with\x07 escapes", description="\n".join([
        "FAKE write a.txt the work",
        step("say", text="done\x00 \x1b[31mred\x1b[0m \x1b]8;;http://127.0.0.1/x\x07link\x1b]8;;\x07 bell\x07 "
                         "cr\r\nok")]))
    world.run(monkeypatch)
    document = repo.done_doc("t-nul")
    assert document["status"] == "done", document
    assert changed_on_branch(repo, "conveyor/t-nul") == {"a.txt": "the work"}
    message = repo.git("log", "-1", "--format=%B", "conveyor/t-nul")
    assert "done red link bell cr\nok" in message
    assert message.startswith("feat(backend-dev): Title  with escapes\n")
    summary = document["result"]["summary"]
    assert summary == "fake agent: done red link bell cr\nok"
    for text in (message, summary):
        assert not any(ord(char) < 32 and char not in "\n\t" for char in text), repr(text)
        assert "\x7f" not in text and not any(0x80 <= ord(char) <= 0x9f for char in text)
    world.assert_no_env_leaked("t-nul")


# ------------------------------------------------------------------ intake closes holes
@pytest.mark.parametrize("task_id", ["x..y", "abc.lock", "ends."])
def test_an_id_git_refuses_as_a_branch_is_rejected_at_intake_with_the_fix(world: World, task_id: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    repo = world.repo
    repo.submit(task_id, description="FAKE write a.txt x")
    world.run(monkeypatch)
    report = repo.rejected_report(f"{task_id}.yaml")
    assert f"conveyor/{task_id}" in json.dumps(report)
    assert not world.repo.agent_started(task_id)      # no agent ran
    assert repo.branches() == ["main"]


def test_a_change_inside_a_submodule_is_refused_by_name(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = world.repo
    library = repository_with(world.root / "library", "lib.txt", "library\n")
    repo.git("-c", "protocol.file.allow=always", "submodule", "add", "-q", str(library), "vendor/lib")
    repo.git("commit", "-q", "-m", "vendor the library")
    before = snapshot(repo.path)
    repo.submit("t-sub", description="FAKE write vendor/lib/patched.txt into the submodule\n"
                                     "FAKE write a.txt outside")
    world.run(monkeypatch)
    document = repo.done_doc("t-sub")
    assert document["status"] == "error"
    assert document["error"]["kind"] == "submodule"
    assert "'vendor/lib'" in document["error"]["message"]
    assert "conveyor/t-sub" not in repo.branches()
    assert snapshot(repo.path) == before


# ------------------------------------------------------------------ what the daemon keeps is private
def test_state_files_and_folders_are_owner_only_whatever_the_umask(world: World,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    repo = world.repo
    repo.write_config("daemon.yaml", DAEMON_YAML + "privacy: full\n")
    repo.submit("t-private", description="FAKE write a.txt x")
    old = os.umask(0o022)
    try:
        world.run(monkeypatch)
    finally:
        os.umask(old)
    assert repo.done_doc("t-private")["status"] == "done"
    config = repo.config()
    folders = [config.state_dir, config.logs_dir, config.logs_dir / "t-private", config.worktrees_dir,
               config.state_dir / "agents"]
    files = [config.telemetry_db, *(config.logs_dir / "t-private").iterdir()]
    assert len(files) > 1
    for folder in folders:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
