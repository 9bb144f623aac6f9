"""install / uninstall / status into temporary directories, driving a recording stand-in for the service manager.

The stand-in is a real executable that appends its arguments to a log and answers like systemctl; one
test drives the real `systemctl --user` with no reachable user instance (as in a container or CI).
"""

from __future__ import annotations

import os
import plistlib
import shutil
import stat
import sys
from pathlib import Path

import pytest

from conveyor.service.install import install, service_path, status, uninstall
from conveyor.service.render import ServiceParams, render_systemd_unit


def make_params(tmp_path: Path, **changes: object) -> ServiceParams:
    repo = tmp_path / "my repo"
    repo.mkdir(exist_ok=True)
    fields: dict[str, object] = dict(repo=repo, command=(sys.executable, "-m", "conveyor"),
                                     state_dir=tmp_path / "state", log_dir=tmp_path / "state" / "logs",
                                     path_env="/usr/bin:/bin")
    fields.update(changes)
    return ServiceParams(**fields)  # type: ignore[arg-type]


def fake_manager(tmp_path: Path, *, fail: tuple[str, ...] = (), code: int = 1) -> tuple[tuple[str, ...], Path]:
    """A real executable standing in for systemctl/launchctl: logs argv; verbs in `fail` exit with `code`."""
    log = tmp_path / "manager.log"
    script = tmp_path / "fake-manager"
    script.write_text(f"""#!{sys.executable}
import sys
args = sys.argv[1:]
with open({str(log)!r}, "a") as out:
    out.write(" ".join(args) + "\\n")
verb = next((a for a in args if not a.startswith("--")), "")
if verb in {list(fail)!r}:
    print("Failed to connect to bus: No medium found", file=sys.stderr)
    sys.exit({code})
print({{"is-enabled": "enabled", "is-active": "active"}}.get(verb, ""))
""")
    script.chmod(0o755)
    return (str(script), "--user"), log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def linger_dir(tmp_path: Path) -> Path:
    path = tmp_path / "linger"
    path.mkdir()
    return path


def test_install_without_a_manager_writes_the_unit_and_says_what_to_run(tmp_path: Path, linger_dir: Path) -> None:
    params = make_params(tmp_path)
    unit_dir = tmp_path / "units"
    report = install(params, unit_dir, start=True, systemctl=None, linger_dir=linger_dir, user="alice")
    assert report.path == unit_dir / params.unit_name
    assert report.path.read_text() == render_systemd_unit(params)
    assert (report.changed, report.activated) == (True, None)
    assert params.state_dir.is_dir() and params.log_dir.is_dir()  # ReadWritePaths needs them to exist
    text = report.text()
    assert f"systemctl --user enable --now {params.unit_name}" in text
    assert "loginctl enable-linger alice" in text
    assert stat.S_IMODE(report.path.stat().st_mode) == 0o644


def test_install_is_idempotent(tmp_path: Path, linger_dir: Path) -> None:
    params, unit_dir = make_params(tmp_path), tmp_path / "units"
    install(params, unit_dir, start=False, systemctl=None, linger_dir=linger_dir, user="alice")
    before = sorted(unit_dir.iterdir())
    again = install(params, unit_dir, start=False, systemctl=None, linger_dir=linger_dir, user="alice")
    assert again.changed is False and "Unchanged" in again.text()
    assert sorted(unit_dir.iterdir()) == before


def test_no_linger_reminder_when_linger_is_on(tmp_path: Path, linger_dir: Path) -> None:
    (linger_dir / "alice").touch()
    report = install(make_params(tmp_path), tmp_path / "units", start=False, systemctl=None,
                     linger_dir=linger_dir, user="alice")
    assert "enable-linger" not in report.text()


def test_install_enables_reloads_and_starts_through_the_manager(tmp_path: Path, linger_dir: Path) -> None:
    params = make_params(tmp_path)
    manager, log = fake_manager(tmp_path)
    report = install(params, tmp_path / "units", start=True, systemctl=manager, linger_dir=linger_dir, user="bob")
    unit = params.unit_name
    assert calls(log) == [f"--user enable {unit}", "--user daemon-reload", f"--user start {unit}"]
    assert report.activated is True
    assert f"{unit} is enabled and started" in report.text()


def test_install_without_start_does_not_start(tmp_path: Path, linger_dir: Path) -> None:
    params = make_params(tmp_path)
    manager, log = fake_manager(tmp_path)
    report = install(params, tmp_path / "units", start=False, systemctl=manager, linger_dir=linger_dir, user="b")
    assert calls(log) == [f"--user enable {params.unit_name}", "--user daemon-reload"]
    assert "start it now with" in report.text()


def test_unreachable_user_instance_is_reported_not_raised(tmp_path: Path, linger_dir: Path) -> None:
    params = make_params(tmp_path)
    manager, log = fake_manager(tmp_path, fail=("daemon-reload",))
    report = install(params, tmp_path / "units", start=True, systemctl=manager, linger_dir=linger_dir, user="b")
    assert report.activated is False and report.path.is_file()
    assert "start" not in calls(log)[-1]
    text = report.text()
    assert "No systemd user instance could be reached" in text and "No medium found" in text


def test_a_failing_start_points_at_the_journal(tmp_path: Path, linger_dir: Path) -> None:
    params = make_params(tmp_path)
    manager, _ = fake_manager(tmp_path, fail=("start",))
    report = install(params, tmp_path / "units", start=True, systemctl=manager, linger_dir=linger_dir, user="b")
    assert report.activated is False
    assert f"journalctl --user -u {params.unit_name}" in report.text()


def test_a_missing_systemctl_is_reported(tmp_path: Path, linger_dir: Path) -> None:
    report = install(make_params(tmp_path), tmp_path / "units", start=True,
                     systemctl=(str(tmp_path / "no-such-systemctl"), "--user"), linger_dir=linger_dir, user="b")
    assert report.activated is False and "is not installed" in report.text()


def test_missing_agent_clis_are_named(tmp_path: Path, linger_dir: Path) -> None:
    report = install(make_params(tmp_path, missing_tools=("codex",)), tmp_path / "units", start=False,
                     systemctl=None, linger_dir=linger_dir, user="b")
    assert "codex is not on PATH" in report.text()


def test_uninstall_stops_disables_and_removes_exactly_what_install_wrote(tmp_path: Path, linger_dir: Path) -> None:
    params, unit_dir = make_params(tmp_path), tmp_path / "units"
    install(params, unit_dir, start=False, systemctl=None, linger_dir=linger_dir, user="b")
    manager, log = fake_manager(tmp_path)
    report = uninstall(params, unit_dir, systemctl=manager)
    unit = params.unit_name
    assert calls(log) == [f"--user stop {unit}", f"--user disable {unit}", "--user daemon-reload"]
    assert (report.changed, report.activated) == (True, True)
    assert list(unit_dir.iterdir()) == []
    assert params.state_dir.is_dir()  # state and logs are data, not install's output
    again = uninstall(params, unit_dir, systemctl=manager)
    assert (again.changed, again.activated) == (False, None) and "Nothing to remove" in again.text()


def test_status_reports_installed_current_and_the_managers_words(tmp_path: Path, linger_dir: Path) -> None:
    params, unit_dir = make_params(tmp_path), tmp_path / "units"
    manager, _ = fake_manager(tmp_path)
    missing = status(params, unit_dir, systemctl=None, linger_dir=linger_dir, user="b")
    assert (missing.installed, missing.current, missing.linger) == (False, False, False)
    install(params, unit_dir, start=False, systemctl=None, linger_dir=linger_dir, user="b")
    (linger_dir / "b").touch()
    now = status(params, unit_dir, systemctl=manager, linger_dir=linger_dir, user="b")
    assert (now.installed, now.current, now.enabled, now.active, now.linger) == (True, True, "enabled", "active",
                                                                                True)
    changed = status(make_params(tmp_path, drain_grace_s=300), unit_dir, systemctl=None, linger_dir=linger_dir,
                     user="b")
    assert changed.installed and not changed.current and "outdated" in changed.text()


def test_status_does_not_guess_when_the_manager_cannot_answer(tmp_path: Path, linger_dir: Path) -> None:
    manager, _ = fake_manager(tmp_path, fail=("is-enabled", "is-active"))
    report = status(make_params(tmp_path), tmp_path / "units", systemctl=manager, linger_dir=linger_dir, user="b")
    assert (report.enabled, report.active) == (None, None) and "active=unknown" in report.text()


# ---------------------------------------------------------------- launchd


def test_launchd_install_writes_a_plist_and_bootstraps_it(tmp_path: Path) -> None:
    params, agents = make_params(tmp_path), tmp_path / "LaunchAgents"
    manager, log = fake_manager(tmp_path)
    report = install(params, agents, start=True, systemctl=(manager[0],), launchd=True)
    assert report.path == agents / f"{params.launchd_label}.plist"
    plist = plistlib.loads(report.path.read_bytes())
    assert plist["Label"] == params.launchd_label and plist["RunAtLoad"] is True
    domain = f"gui/{os.getuid()}"
    assert calls(log) == [f"bootout {domain}/{params.launchd_label}", f"bootstrap {domain} {report.path}"]
    assert report.activated is True and "enable-linger" not in report.text()


def test_launchd_uninstall_treats_not_loaded_as_done(tmp_path: Path) -> None:
    params, agents = make_params(tmp_path), tmp_path / "LaunchAgents"
    install(params, agents, start=False, systemctl=None, launchd=True)
    manager, _ = fake_manager(tmp_path, fail=("bootout",), code=3)
    report = uninstall(params, agents, systemctl=(manager[0],), launchd=True)
    assert report.activated is True and "was not loaded" in report.text()
    assert not service_path(params, agents, launchd=True).exists()


# ---------------------------------------------------------------- the real systemctl, no user instance


@pytest.mark.skipif(shutil.which("systemctl") is None, reason="systemctl is not installed (.ci/run installs it)")
def test_real_systemctl_without_a_user_instance(tmp_path: Path, linger_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`enable` works on files alone; reloading and starting need the instance, and say so."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "empty-runtime"))  # no bus here, on any machine
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    (tmp_path / "empty-runtime").mkdir()
    unit_dir = Path(os.environ["XDG_CONFIG_HOME"]) / "systemd" / "user"  # the private HOME of the safety net
    params = make_params(tmp_path)
    report = install(params, unit_dir, start=True, systemctl=("systemctl", "--user"), linger_dir=linger_dir,
                     user="b")
    wants = unit_dir / "default.target.wants" / params.unit_name
    assert report.activated is False and wants.is_symlink()
    assert "No systemd user instance could be reached" in report.text()
    removed = uninstall(params, unit_dir, systemctl=("systemctl", "--user"))
    assert not wants.is_symlink() and not (unit_dir / params.unit_name).exists()
    assert removed.activated is False  # stopping and reloading needed the instance
