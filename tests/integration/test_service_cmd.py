"""`conveyor service render|install|uninstall|status` as a real CLI process, for a real repository after
`conveyor init`, always into temporary directories (the safety net points HOME and XDG_CONFIG_HOME there)."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import DAEMON_YAML, Repo

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
Cli = Callable[..., subprocess.CompletedProcess[str]]


def unit_settings(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


@pytest.fixture
def outside(repo: Repo, tmp_path: Path) -> dict[str, Path]:
    """Worktrees and telemetry configured outside the repository: they must become writable paths."""
    places = {"worktrees": tmp_path / "elsewhere" / "worktrees", "db": tmp_path / "data" / "telemetry.db"}
    repo.write_config("daemon.yaml", DAEMON_YAML + f"worktrees_dir: {places['worktrees']}\n"
                                                   f"telemetry_db: {places['db']}\ndrain_grace_s: 42\n")
    return places


def test_render_writes_the_unit_for_this_repository_and_its_agents(repo: Repo, outside: dict[str, Path],
                                                                   conveyor_cli: Cli, tmp_path: Path) -> None:
    done = conveyor_cli("service", "render", "--systemd", "--repo", str(repo.path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    settings = unit_settings(done.stdout)
    assert settings["ExecStart"] == [f"{sys.executable} -m conveyor run --repo {repo.path}"]
    assert settings["Type"] == ["notify"] and settings["WorkingDirectory"] == [str(repo.path)]
    writable = settings["ReadWritePaths"][0].split()
    assert writable[0] == str(repo.path)                       # the state dir (.git/conveyor) lies inside it
    assert f"-{outside['worktrees']}" in writable and f"-{outside['db'].parent}" in writable
    assert settings["TimeoutStopSec"] == ["72"]                 # drain_grace_s (42) + the margin
    path_entries = settings["Environment"][0].removeprefix('"').removeprefix("PATH=").rstrip('"').split(":")
    assert str(tmp_path / "bin") in path_entries               # the fake agent CLI named in tools.yaml


def test_a_config_dir_of_its_own_is_rendered_into_the_command(repo: Repo, conveyor_cli: Cli, tmp_path: Path) -> None:
    """`--config-dir` elsewhere must reach `conveyor run` in the service, or the service would quietly run with
    the repository's own config/ (or the defaults) instead of the one the user validated."""
    elsewhere = tmp_path / "conveyor config"
    shutil.copytree(repo.path / "config", elsewhere)
    done = conveyor_cli("service", "render", "--systemd", "--repo", str(repo.path), "--config-dir", str(elsewhere),
                        cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert unit_settings(done.stdout)["ExecStart"] == [
        f'{sys.executable} -m conveyor run --repo {repo.path} --config-dir "{elsewhere}"']
    plist = conveyor_cli("service", "render", "--launchd", "--repo", str(repo.path), "--config-dir", str(elsewhere),
                         cwd=tmp_path)
    assert plistlib.loads(plist.stdout.encode())["ProgramArguments"][-2:] == ["--config-dir", str(elsewhere)]
    own = conveyor_cli("service", "render", "--systemd", "--repo", str(repo.path), "--config-dir",
                       str(repo.path / "config"), cwd=tmp_path)
    assert "--config-dir" not in unit_settings(own.stdout)["ExecStart"][0]


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_the_rendered_unit_passes_systemd_analyze_verify(repo: Repo, outside: dict[str, Path], conveyor_cli: Cli,
                                                         tmp_path: Path) -> None:
    done = conveyor_cli("service", "render", "--systemd", "--repo", str(repo.path), cwd=tmp_path)
    unit = tmp_path / "conveyor-test.service"
    unit.write_text(done.stdout)
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    assert SYSTEMD_ANALYZE is not None
    check = subprocess.run([SYSTEMD_ANALYZE, "--user", "verify", str(unit)], capture_output=True, text=True,
                           env={**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_PAGER": ""},
                           timeout=60, check=False)
    assert (check.returncode, check.stdout + check.stderr) == (0, "")


def test_render_launchd_is_a_plist_with_the_agents_on_path(repo: Repo, conveyor_cli: Cli, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "conveyor", "service", "render", "--launchd", "--repo",
                           str(repo.path)], capture_output=True, cwd=tmp_path, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    plist: dict[str, Any] = plistlib.loads(done.stdout)
    assert plist["ProgramArguments"] == [sys.executable, "-m", "conveyor", "run", "--repo", str(repo.path)]
    assert plist["RunAtLoad"] is True and plist["KeepAlive"] == {"SuccessfulExit": False}
    assert str(tmp_path / "bin") in plist["EnvironmentVariables"]["PATH"].split(":")
    assert plist["StandardErrorPath"].startswith(str(repo.git_dir / "conveyor" / "logs"))


def test_install_status_uninstall_in_the_default_user_directory(repo: Repo, conveyor_cli: Cli,
                                                               tmp_path: Path) -> None:
    """No --unit-dir: the unit goes below $XDG_CONFIG_HOME, which the safety net points into tmp_path."""
    unit_dir = Path(os.environ["XDG_CONFIG_HOME"]) / "systemd" / "user"
    args = ("--systemd", "--repo", str(repo.path), "--no-manager")
    installed = conveyor_cli("service", "install", *args, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    units = list(unit_dir.glob("conveyor-repo-*.service"))
    assert len(units) == 1 and f"Wrote {units[0]}" in installed.stdout
    assert "systemctl --user daemon-reload" in installed.stdout          # what to run, since we did not
    rendered = conveyor_cli("service", "render", "--systemd", "--repo", str(repo.path), cwd=tmp_path).stdout
    assert units[0].read_text() == rendered
    status = conveyor_cli("service", "status", *args, cwd=tmp_path)
    assert (status.returncode, status.stdout.splitlines()[0]) == (0, f"{units[0]}: installed")
    again = conveyor_cli("service", "install", *args, cwd=tmp_path)
    assert f"Unchanged: {units[0]}" in again.stdout
    removed = conveyor_cli("service", "uninstall", *args, cwd=tmp_path)
    assert removed.returncode == 0 and f"Removed {units[0]}" in removed.stdout
    assert not units[0].exists()
    gone = conveyor_cli("service", "status", *args, cwd=tmp_path)
    assert gone.returncode == 3 and "not installed" in gone.stdout


def test_install_reminds_about_linger_when_it_is_off(repo: Repo, conveyor_cli: Cli, tmp_path: Path) -> None:
    import getpass

    if Path("/var/lib/systemd/linger", getpass.getuser()).exists():
        pytest.skip("linger is on for this user here")
    done = conveyor_cli("service", "install", "--systemd", "--repo", str(repo.path), "--no-manager",
                        "--unit-dir", str(tmp_path / "units"), cwd=tmp_path)
    assert f"loginctl enable-linger {getpass.getuser()}" in done.stdout


def fake_systemctl(tmp_path: Path, fail: str = "") -> tuple[str, Path]:
    log = tmp_path / "systemctl.log"
    script = tmp_path / "fake-systemctl"
    script.write_text(f"#!{sys.executable}\nimport sys\nargs = sys.argv[1:]\n"
                      f"open({str(log)!r}, 'a').write(' '.join(args) + '\\n')\n"
                      f"sys.exit(1 if {fail!r} in args else 0)\n")
    script.chmod(0o755)
    return f"{script} --user", log


def test_install_start_enables_reloads_and_starts(repo: Repo, conveyor_cli: Cli, tmp_path: Path) -> None:
    manager, log = fake_systemctl(tmp_path)
    done = conveyor_cli("service", "install", "--systemd", "--start", "--repo", str(repo.path), "--unit-dir",
                        str(tmp_path / "units"), "--manager-command", manager, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    unit = next((tmp_path / "units").glob("*.service")).name
    assert log.read_text().splitlines() == [f"--user enable {unit}", "--user daemon-reload", f"--user start {unit}"]
    assert "is enabled and started" in done.stdout


def test_a_failing_service_manager_is_a_non_zero_exit_with_its_words(repo: Repo, conveyor_cli: Cli,
                                                                     tmp_path: Path) -> None:
    manager, _ = fake_systemctl(tmp_path, fail="daemon-reload")
    done = conveyor_cli("service", "install", "--systemd", "--start", "--repo", str(repo.path), "--unit-dir",
                        str(tmp_path / "units"), "--manager-command", manager, cwd=tmp_path)
    assert done.returncode == 1
    assert "No systemd user instance could be reached" in done.stdout
    assert next((tmp_path / "units").glob("*.service")).exists()     # the file is in place for later
