"""Installing the pinned agent CLIs, with a tiny real `npm` stand-in on PATH (the real one is used by e2e)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests.conftest import REPO_ROOT
from tests.support import agent_clis
from tests.support.agent_clis import InstallError

CODEX_VERSION = agent_clis.PINNED["codex"][1]
CLAUDE_VERSION = agent_clis.PINNED["claude-code"][1]

FAKE_NPM = textwrap.dedent(f"""\
    #!{sys.executable}
    # Stands in for `npm install --prefix DIR ... PKG@VERSION`: writes node_modules/.bin/<binary> as a script.
    import json, os, pathlib, sys, time
    args = sys.argv[1:]
    with open(os.environ["FAKE_NPM_LOG"], "a") as log:
        log.write(json.dumps({{"argv": args, "cache": os.environ.get("npm_config_cache")}}) + "\\n")
    time.sleep(float(os.environ.get("FAKE_NPM_SLEEP", "0")))
    mode = os.environ.get("FAKE_NPM_MODE", "ok")
    if mode == "fail":
        print("npm error code E404\\nnpm error 404 Not Found", file=sys.stderr)
        sys.exit(1)
    prefix = pathlib.Path(args[args.index("--prefix") + 1])
    pathlib.Path(os.environ["npm_config_cache"], "_cacache").mkdir(parents=True)   # as npm fills its cache
    package, version = args[-1].rsplit("@", 1)
    version = "9.9.9" if mode == "wrong-version" else version
    binary = {{"@openai/codex": "codex", "@anthropic-ai/claude-code": "claude"}}[package]
    bin_dir = prefix / "node_modules" / ".bin"
    bin_dir.mkdir(parents=True)
    exe = bin_dir / binary
    exe.write_text(f"#!/bin/sh\\necho '{{binary}}-cli {{version}}'\\n")
    exe.chmod(0o755)
""")


@pytest.fixture
def npm_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the fake npm first on PATH; return the file where it logs each invocation."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    (bin_dir / "npm").write_text(FAKE_NPM)
    (bin_dir / "npm").chmod(0o755)
    log = tmp_path / "npm.log"
    log.touch()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_NPM_LOG", str(log))
    return log


def invocations(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_cache_root_prefers_the_explicit_variable_then_xdg_then_home(tmp_path: Path) -> None:
    assert agent_clis.cache_root({"CONVEYOR_CLI_CACHE": "/c", "XDG_CACHE_HOME": "/x", "HOME": "/h"}) == Path("/c")
    assert agent_clis.cache_root({"XDG_CACHE_HOME": "/x", "HOME": "/h"}) == Path("/x/conveyor/agent-clis")
    assert agent_clis.cache_root({"HOME": "/h"}) == Path("/h/.cache/conveyor/agent-clis")


def test_install_runs_npm_once_into_a_folder_keyed_by_name_and_version(npm_log: Path, tmp_path: Path) -> None:
    root = tmp_path / "cache"

    first = agent_clis.install("codex", root)
    second = agent_clis.install("codex", root)

    folder = root / f"codex-{CODEX_VERSION}"
    assert first == second == folder / "node_modules" / ".bin" / "codex"
    assert agent_clis.find("codex", root) == first
    assert agent_clis.version_of(first) == CODEX_VERSION
    assert (folder / agent_clis.COMPLETE_MARKER).is_file()
    [call] = invocations(npm_log)
    staging = root / f".codex-{CODEX_VERSION}.tmp-{os.getpid()}"
    assert call["argv"] == ["install", "--prefix", str(staging), "--no-audit", "--no-fund", "--save-exact",
                            f"@openai/codex@{CODEX_VERSION}"]
    assert call["cache"] == str(staging / ".npm-cache")
    assert not (folder / ".npm-cache").exists()
    assert not list(root.glob(".codex-*.tmp-*"))


def test_concurrent_installs_run_npm_once_and_agree(npm_log: Path, tmp_path: Path) -> None:
    root = tmp_path / "cache"
    code = ("from pathlib import Path; from tests.support import agent_clis; "
            f"print(agent_clis.install('codex', Path({str(root)!r})))")
    env = {**os.environ, "FAKE_NPM_SLEEP": "1"}
    workers = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
               for _ in range(3)]

    outputs = [worker.communicate(timeout=60)[0].strip().splitlines()[-1] for worker in workers]  # after logs

    assert [worker.returncode for worker in workers] == [0, 0, 0]
    assert len(set(outputs)) == 1 and outputs[0].endswith("/node_modules/.bin/codex")
    assert len(invocations(npm_log)) == 1


def test_a_failed_npm_install_says_why_and_leaves_nothing_marked(npm_log: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_NPM_MODE", "fail")

    with pytest.raises(InstallError, match=r"(?s)exited 1:\n.*404 Not Found"):
        agent_clis.install("codex", tmp_path / "cache")

    assert agent_clis.find("codex", tmp_path / "cache") is None
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"codex-{CODEX_VERSION}.lock"]  # no staging left


def test_a_version_other_than_the_pinned_one_is_refused(npm_log: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_NPM_MODE", "wrong-version")

    with pytest.raises(InstallError, match=f"@openai/codex@{CODEX_VERSION} installed, but codex --version says 9.9.9"):
        agent_clis.install("codex", tmp_path / "cache")

    assert agent_clis.find("codex", tmp_path / "cache") is None


def test_leftovers_of_an_interrupted_install_are_replaced(npm_log: Path, tmp_path: Path) -> None:
    root = tmp_path / "cache"
    stale_staging = root / f".codex-{CODEX_VERSION}.tmp-99999999"
    half_done = root / f"codex-{CODEX_VERSION}"
    (stale_staging / "junk").mkdir(parents=True)
    (half_done / "node_modules").mkdir(parents=True)        # no completion marker: never finished

    path = agent_clis.install("codex", root)

    assert path.is_file() and not stale_staging.exists()
    assert len(invocations(npm_log)) == 1


def test_missing_npm_is_reported_as_such(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))

    with pytest.raises(InstallError, match="npm is not on PATH"):
        agent_clis.install("codex", tmp_path / "cache")


def test_unknown_tools_are_refused_with_the_known_names(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="unknown agent CLI 'claud'; known: claude-code, codex"):
        agent_clis.install("claud", tmp_path)


def test_claude_that_is_only_a_script_stub_is_not_runnable(npm_log: Path, tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="without a runnable claude"):
        agent_clis.install("claude-code", tmp_path / "cache")


def write_exe(path: Path, first_bytes: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(first_bytes + b"\0" * 16)
    path.chmod(0o755)
    return path


def test_find_claude_prefers_the_native_bin_entry_then_the_platform_binary(tmp_path: Path) -> None:
    folder = tmp_path / f"claude-code-{CLAUDE_VERSION}"
    shim = write_exe(folder / "node_modules" / ".bin" / "claude", b"#!/bin/sh\necho stub\n")
    platform = write_exe(folder / "node_modules" / "@anthropic-ai" / "claude-code-linux-x64" / "claude", b"\x7fELF")
    assert agent_clis.find("claude-code", tmp_path) is None       # not marked complete yet
    (folder / agent_clis.COMPLETE_MARKER).write_text("done\n")

    assert agent_clis.find("claude-code", tmp_path) == platform   # the .bin entry is a stub
    write_exe(shim, b"\x7fELF")
    assert agent_clis.find("claude-code", tmp_path) == shim


@pytest.mark.parametrize(("first_bytes", "native"), [
    (b"\x7fELF", True), (b"\xcf\xfa\xed\xfe", True), (b"#!/usr/bin/env node", False), (b"", False)])
def test_is_native_tells_binaries_from_scripts(tmp_path: Path, first_bytes: bytes, native: bool) -> None:
    path = tmp_path / "exe"
    path.write_bytes(first_bytes)

    assert agent_clis.is_native(path) is native
    assert agent_clis.is_native(tmp_path / "missing") is False


def test_version_of_reports_executables_that_fail_or_cannot_run(tmp_path: Path) -> None:
    failing = tmp_path / "failing"
    failing.write_text("#!/bin/sh\necho 'boom' >&2\nexit 3\n")
    failing.chmod(0o755)

    with pytest.raises(InstallError, match=r"failed \(exit 3\):\n    boom"):
        agent_clis.version_of(failing)
    with pytest.raises(InstallError, match="could not run"):
        agent_clis.version_of(tmp_path / "missing")


def test_module_cli_installs_and_prints_the_path(npm_log: Path, tmp_path: Path) -> None:
    root = tmp_path / "cache"
    argv = [sys.executable, "-m", "tests.support.agent_clis", "install", "codex", "--root", str(root)]

    done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=REPO_ROOT)

    assert done.returncode == 0, done.stderr
    assert done.stdout == f"codex {root / f'codex-{CODEX_VERSION}' / 'node_modules' / '.bin' / 'codex'}\n"


def test_module_cli_reports_a_failed_install(npm_log: Path, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "tests.support.agent_clis", "install", "codex", "--root", str(tmp_path)]

    done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=REPO_ROOT,
                          env={**os.environ, "FAKE_NPM_MODE": "fail"})

    assert done.returncode == 1
    assert "404 Not Found" in done.stderr and done.stdout == ""
