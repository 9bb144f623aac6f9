"""Install, remove and inspect the user service: write the unit (or plist), then drive the service manager.

The directory is a parameter (tests render into a temporary one) and so is the control command:
`("systemctl", "--user")`, or `("launchctl",)` with `launchd=True`; None writes or removes files only.
A service manager that cannot be reached (no user systemd instance, as in a container) is reported in
plain words, never raised: the file is in place and the message says what to run later. Every step is
idempotent: installing twice changes nothing, uninstalling removes exactly the file install wrote.
"""

from __future__ import annotations

import getpass
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from conveyor.core.logs import get_logger
from conveyor.core.yamlio import atomic_write
from conveyor.service.render import ServiceParams, render_launchd_plist, render_systemd_unit

log = get_logger()

LINGER_DIR = Path("/var/lib/systemd/linger")  # logind keeps one file per user with lingering enabled
SYSTEMCTL_USER = ("systemctl", "--user")
LAUNCHCTL = ("launchctl",)
CONTROL_TIMEOUT_S = 30.0
_LAUNCHCTL_NOT_LOADED = 3  # `launchctl bootout` of a job that is not loaded: ESRCH


@dataclass(frozen=True)
class ServiceReport:
    """What install/uninstall did. `activated`: None when the manager was not called, False when a step failed."""

    path: Path
    changed: bool
    activated: bool | None
    messages: tuple[str, ...]

    def text(self) -> str:
        return "\n".join(self.messages)


@dataclass(frozen=True)
class ServiceStatus:
    path: Path
    installed: bool
    current: bool  # the file on disk is what would be rendered now
    enabled: str | None  # the manager's own word ("enabled", "disabled"...), None when unknown
    active: str | None  # "active", "inactive", "failed"...; for launchd "loaded" / "not loaded"
    linger: bool | None  # systemd only
    messages: tuple[str, ...]

    def text(self) -> str:
        return "\n".join(self.messages)


@dataclass
class _Manager:
    """The control command plus the running list of sentences for the user."""

    argv: tuple[str, ...]
    messages: list[str] = field(default_factory=list)

    @property
    def shown(self) -> str:
        return " ".join(self.argv)

    def run(self, *args: str) -> tuple[int | None, str]:
        try:
            done = subprocess.run([*self.argv, *args], capture_output=True, text=True, check=False,
                                  timeout=CONTROL_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            return None, f"{self.argv[0]} is not installed"
        except subprocess.TimeoutExpired:
            return None, f"no answer within {CONTROL_TIMEOUT_S:.0f} s"
        return done.returncode, (done.stdout + done.stderr).strip()

    def step(self, *args: str) -> bool:
        code, out = self.run(*args)
        if code != 0:
            self.messages.append(f"`{self.shown} {' '.join(args)}` failed: {out or f'exit code {code}'}")
            log.warning("service.control_failed", command=[*self.argv, *args], code=code, output=out)
        return code == 0

    def word(self, *args: str) -> str | None:
        """The one-word answer of `is-enabled`/`is-active` (they exit non-zero for "disabled"/"inactive")."""
        _, out = self.run(*args)
        return out if out and len(out.split()) == 1 else None


def service_path(params: ServiceParams, unit_dir: Path, *, launchd: bool = False) -> Path:
    return unit_dir / (f"{params.launchd_label}.plist" if launchd else params.unit_name)


def rendered(params: ServiceParams, *, launchd: bool = False) -> bytes:
    return render_launchd_plist(params) if launchd else render_systemd_unit(params).encode("utf-8")


def install(params: ServiceParams, unit_dir: Path, *, start: bool, systemctl: Sequence[str] | None,
            launchd: bool = False, linger_dir: Path = LINGER_DIR, user: str | None = None) -> ServiceReport:
    """Write the unit (creating the state and log directories it names), enable it, start it if asked."""
    for directory in (unit_dir, params.state_dir, params.log_dir):
        directory.mkdir(parents=True, exist_ok=True)
    path = service_path(params, unit_dir, launchd=launchd)
    changed = _write_if_changed(path, rendered(params, launchd=launchd))
    manager = _Manager(tuple(systemctl or (LAUNCHCTL if launchd else SYSTEMCTL_USER)))
    manager.messages.append(f"Wrote {path}" if changed else f"Unchanged: {path}")
    manager.messages.extend(f"Warning: {tool} is not on PATH; tasks routed to it will fail until it is "
                            "installed (then run this again)." for tool in params.missing_tools)
    if launchd:
        activated = _activate_launchd(params, path, start, manager, called=systemctl is not None)
    else:
        manager.messages.append(_write_credentials(params))
        activated = _activate_systemd(params, start, changed, manager, called=systemctl is not None)
        manager.messages.extend(_linger_messages(linger_dir, user))
    log.info("service.installed", path=str(path), changed=changed, activated=activated)
    return ServiceReport(path, changed, activated, tuple(manager.messages))


def uninstall(params: ServiceParams, unit_dir: Path, *, systemctl: Sequence[str] | None,
              launchd: bool = False) -> ServiceReport:
    """Stop and disable the service, remove the file install wrote. State and logs stay: they are data."""
    path = service_path(params, unit_dir, launchd=launchd)
    if not path.exists():
        return ServiceReport(path, False, None, (f"Nothing to remove: {path} does not exist",))
    manager = _Manager(tuple(systemctl or ()))
    activated: bool | None = None
    if systemctl is not None:
        activated = _bootout(params, manager) if launchd else _deactivate_systemd(params, manager)
    path.unlink()
    manager.messages.append(f"Removed {path}")
    for link in _links_to(path.name, unit_dir):    # `enable` made them; without the manager they would dangle
        link.unlink()
        manager.messages.append(f"Removed {link}")
    if not launchd and params.environment_file.exists():
        params.environment_file.unlink()
        manager.messages.append(f"Removed {params.environment_file} (the service's credentials)")
    if systemctl is not None and not launchd:
        activated = manager.step("daemon-reload") and activated
    log.info("service.uninstalled", path=str(path), activated=activated)
    return ServiceReport(path, True, activated, tuple(manager.messages))


def status(params: ServiceParams, unit_dir: Path, *, systemctl: Sequence[str] | None, launchd: bool = False,
           linger_dir: Path = LINGER_DIR, user: str | None = None) -> ServiceStatus:
    """Whether the file is installed and current, and what the service manager says about it."""
    path = service_path(params, unit_dir, launchd=launchd)
    installed = path.is_file()
    current = installed and path.read_bytes() == rendered(params, launchd=launchd)
    outdated = " (outdated: run `conveyor service install` again)" if installed and not current else ""
    messages = [f"{path}: {'installed' if installed else 'not installed'}{outdated}"]
    enabled = active = None
    if systemctl is not None and launchd:
        code, _ = _Manager(tuple(systemctl)).run("print", f"{_launchd_domain()}/{params.launchd_label}")
        active = "loaded" if code == 0 else "not loaded"
        messages.append(f"{params.launchd_label}: {active}")
    elif systemctl is not None:
        manager = _Manager(tuple(systemctl))
        enabled, active = manager.word("is-enabled", params.unit_name), manager.word("is-active", params.unit_name)
        messages.append(f"{params.unit_name}: enabled={enabled or 'unknown'}, active={active or 'unknown'}")
    linger = None if launchd else _linger(linger_dir, user)
    if linger is False:
        messages.extend(_linger_messages(linger_dir, user))
    return ServiceStatus(path, installed, current, enabled, active, linger, tuple(messages))


def _links_to(name: str, unit_dir: Path) -> list[Path]:
    """`*.wants/<name>` and `*.requires/<name>` links in the unit folder (what `systemctl enable` writes)."""
    return [link for pattern in ("*.wants", "*.requires") for folder in unit_dir.glob(pattern)
            for link in [folder / name] if link.is_symlink() or link.exists()]


def _write_credentials(params: ServiceParams) -> str:
    """The unit's EnvironmentFile, owner-only: the credential variables the daemon's tools need. Says which."""
    target = params.environment_file
    lines = [f'{name}="{_env_file_value(value)}"' for name, value in sorted(params.credentials.items())
             if "\n" not in value and "\r" not in value]
    fd = os.open(str(target) + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, ("\n".join(lines) + ("\n" if lines else "")).encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(str(target) + ".tmp", target)
    names = ", ".join(sorted(params.credentials))
    if names:
        return (f"Credentials for the service: {names}, copied from this shell into {target} (mode 0600, only "
                "you can read it); the unit reads it at start (EnvironmentFile=). After changing a key, run "
                "install again or edit that file, then restart the service.")
    return (f"Credentials for the service: none of the tools' variables is set in this shell, so {target} is "
            "empty and the agents use their CLI's own login (e.g. `claude login`, `codex login`); set the "
            "variables and run install again to pass keys instead.")


def _env_file_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _write_if_changed(path: Path, data: bytes) -> bool:
    if path.is_file() and path.read_bytes() == data:
        return False
    atomic_write(path, data)
    path.chmod(0o644)  # launchd refuses agents that others may write; systemd does not mind
    return True


def _activate_systemd(params: ServiceParams, start: bool, changed: bool, manager: _Manager, *,
                      called: bool) -> bool | None:
    unit, ctl = params.unit_name, manager.shown
    if not called:
        manager.messages.append(f"The service manager was not called. To activate: {ctl} daemon-reload && "
                                f"{ctl} enable {'--now ' if start else ''}{unit}")
        return None
    if not manager.step("enable", unit):  # only writes symlinks: works without a running user instance
        return False
    if not manager.step("daemon-reload"):
        manager.messages.append(
            f"No systemd user instance could be reached, so nothing was loaded or started. The unit is enabled "
            f"and starts with your next login session (or at boot with linger); from a session run: "
            f"{ctl} daemon-reload && {ctl} start {unit}")
        return False
    if start and not manager.step("start", unit):
        manager.messages.append(f"See why with: {ctl} status {unit}; journalctl --user -u {unit}")
        return False
    if start and changed:
        manager.messages.append(f"If it was already running, apply the new unit with: {ctl} restart {unit}")
    manager.messages.append(f"{unit} is enabled and started." if start
                            else f"{unit} is enabled; start it now with: {ctl} start {unit}")
    return True


def _deactivate_systemd(params: ServiceParams, manager: _Manager) -> bool:
    stopped = manager.step("stop", params.unit_name)  # drains: waits up to TimeoutStopSec
    disabled = manager.step("disable", params.unit_name)
    return stopped and disabled


def _activate_launchd(params: ServiceParams, path: Path, start: bool, manager: _Manager, *,
                      called: bool) -> bool | None:
    target = f"{_launchd_domain()}/{params.launchd_label}"
    if not (called and start):
        manager.messages.append(f"It loads at your next login; to start it now: "
                                f"{manager.shown} bootstrap {_launchd_domain()} {path}")
        return None
    manager.run("bootout", target)  # reload a changed plist; a job that is not loaded is fine
    if not manager.step("bootstrap", _launchd_domain(), str(path)):
        return False
    manager.messages.append(f"{params.launchd_label} is loaded and running; its logs are in {params.log_dir}")
    return True


def _bootout(params: ServiceParams, manager: _Manager) -> bool:
    code, out = manager.run("bootout", f"{_launchd_domain()}/{params.launchd_label}")
    if code == 0:
        manager.messages.append(f"Stopped and unloaded {params.launchd_label}")
    elif code == _LAUNCHCTL_NOT_LOADED:
        manager.messages.append(f"{params.launchd_label} was not loaded")
    else:
        manager.messages.append(f"`{manager.shown} bootout` failed: {out or f'exit code {code}'}")
    return code in (0, _LAUNCHCTL_NOT_LOADED)


def _launchd_domain() -> str:
    return f"gui/{os.getuid()}"


def _linger(linger_dir: Path, user: str | None) -> bool:
    return (linger_dir / (user or getpass.getuser())).exists()


def _linger_messages(linger_dir: Path, user: str | None) -> list[str]:
    name = user or getpass.getuser()
    if _linger(linger_dir, name):
        return []
    return [f"Linger is off for {name}: the service starts with your first login session and stops after the "
            f"last one ends. To run it from boot and across logouts: loginctl enable-linger {name}"]
