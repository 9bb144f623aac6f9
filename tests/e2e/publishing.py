"""Fixtures of the e2e tests that publish through FakeGitHub with both real CLIs (review, follow-ups): a
bare `origin`, FakeGitHub serving it, `$CODEX_HOME` outside /tmp, and an environment for both CLIs.
Imported by those test modules (pytest finds fixtures in a module's namespace)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import git
from tests.e2e.conftest import base_env
from tests.integration.gate_support import GH_REPO, TOKEN, TOKEN_ENV
from tests.support.fake_github import FakeGitHub
from tests.support.model_server import ModelServer


@pytest.fixture
def origin(git_repo: Path, tmp_path: Path) -> Path:
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    return bare


@pytest.fixture
def github(origin: Path) -> Iterator[FakeGitHub]:
    with FakeGitHub(token=TOKEN, repos=(GH_REPO,), remotes={GH_REPO: origin}) as server:
        yield server


@pytest.fixture
def codex_home(model_server: ModelServer) -> Iterator[Path]:
    """`$CODEX_HOME` outside /tmp: with a system bubblewrap installed, codex refuses to link its sandbox
    helper under a temporary folder and then every command it runs fails silently (no file written)."""
    root = Path(tempfile.mkdtemp(prefix="conveyor-codex-", dir="/var/tmp"))
    home = root / ".codex"
    model_server.write_codex_config(home)
    yield home
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def env(model_server: ModelServer, agent_home: Path, codex_home: Path) -> dict[str, str]:
    return {**base_env(model_server), **model_server.claude_env(agent_home, max_retries=0),
            **model_server.codex_env(codex_home, agent_home), TOKEN_ENV: TOKEN}
