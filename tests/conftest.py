"""Shared fixtures: a safety net that keeps tests out of the real home and repository, and real git repos."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

REPO_ROOT = Path(__file__).resolve().parent.parent
# Real inputs copied into the repository (tests/fixtures/README.md says where each came from): a clone with
# nothing beside it runs every test.
FIXTURES = REPO_ROOT / "tests" / "fixtures"


@pytest.fixture(autouse=True)
def _safety_net(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Give every test a private HOME and pinned git identity; strip inherited GIT_* variables.

    A test that writes to the real home directory or relies on the developer's git config would pass
    here and fail elsewhere, so neither is reachable.
    """
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    for name in list(os.environ):
        if name.startswith("GIT_") or name in {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Test Author")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "author@example.invalid")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Test Committer")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "committer@example.invalid")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    (home / ".gitconfig").write_text(
        "[init]\n\tdefaultBranch = main\n[user]\n\tname = Test\n\temail = t@example.invalid\n")
    yield
    # structlog's configuration is process-global: a test that runs the CLI in-process must not change
    # what the next test's capture_logs() sees.
    structlog.reset_defaults()


def git(cwd: Path, *args: str) -> str:
    """Run real git and return stdout; raise with stderr on failure."""
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout.strip()


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A real git repository on branch main with one commit."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("# scratch\n")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "initial commit")
    return repo
