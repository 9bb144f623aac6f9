"""The pinned real agent CLIs from npm, installed once per machine into a cache folder (tests/e2e/).

Tests and the offline demo drive the real `claude` and `codex` against the fake model server. The CLIs'
flags and output shapes drift between releases, so the versions are pinned and each lives in its own
folder keyed by name and version, outside the repository. Installing is idempotent and safe when several
processes (pytest-xdist workers) try at once: one installs under a file lock, the others wait and reuse.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import click
import structlog

from conveyor.core.errors import ToolUnavailable

PINNED: dict[str, tuple[str, str]] = {
    "claude-code": ("@anthropic-ai/claude-code", "2.1.328"),
    "codex": ("@openai/codex", "0.169.0"),
}
BINARIES = {"claude-code": "claude", "codex": "codex"}
COMPLETE_MARKER = ".conveyor-installed"
NPM_CACHE_DIR = ".npm-cache"
NPM_TIMEOUT_S = 900.0
VERSION_TIMEOUT_S = 30.0

# First bytes of a native executable (ELF; Mach-O 32/64 both byte orders; universal binary). A stub
# left by an install whose postinstall did not run is a shell script instead.
_NATIVE_MAGIC = (b"\x7fELF", b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe",
                 b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe")
_VERSION = re.compile(r"\d+\.\d+\.\d+")

log = structlog.get_logger()


class InstallError(ToolUnavailable):
    """A pinned agent CLI could not be installed or does not run."""


def cache_root(env: Mapping[str, str]) -> Path:
    """`$CONVEYOR_CLI_CACHE`, else `$XDG_CACHE_HOME/conveyor/agent-clis`, else `~/.cache/conveyor/agent-clis`."""
    if env.get("CONVEYOR_CLI_CACHE"):
        return Path(env["CONVEYOR_CLI_CACHE"]).expanduser()
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "conveyor" / "agent-clis"
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    return home / ".cache" / "conveyor" / "agent-clis"


def _pinned(tool: str) -> tuple[str, str]:
    if tool not in PINNED:
        raise InstallError(f"unknown agent CLI {tool!r}; known: {', '.join(sorted(PINNED))}")
    return PINNED[tool]


def install_dir(tool: str, root: Path) -> Path:
    """The folder that holds one pinned CLI, e.g. `<root>/claude-code-2.1.328`."""
    return root / f"{tool}-{_pinned(tool)[1]}"


def is_native(path: Path) -> bool:
    """True for a native executable, False for a script stub (or a missing file)."""
    try:
        with path.open("rb") as handle:
            return handle.read(4) in _NATIVE_MAGIC
    except OSError:
        return False


def _claude_candidates(folder: Path) -> Iterator[Path]:
    """`.bin/claude` once the postinstall put the native binary there, else the platform package's own."""
    shim = folder / "node_modules" / ".bin" / "claude"
    if is_native(shim):
        yield shim
    for platform_binary in sorted(folder.glob("node_modules/@anthropic-ai/claude-code-*/claude")):
        if is_native(platform_binary):
            yield platform_binary


def _executable(tool: str, folder: Path) -> Path | None:
    if tool == "claude-code":
        return next(_claude_candidates(folder), None)
    wrapper = folder / "node_modules" / ".bin" / BINARIES[tool]
    return wrapper if wrapper.exists() else None


def find(tool: str, root: Path) -> Path | None:
    """The runnable executable of a completely installed pinned CLI, or None."""
    folder = install_dir(tool, root)
    if not (folder / COMPLETE_MARKER).is_file():
        return None
    return _executable(tool, folder)


def version_of(path: Path) -> str:
    """The version an executable reports with `--version` (runs offline in well under a second)."""
    try:
        done = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=False,
                              stdin=subprocess.DEVNULL, timeout=VERSION_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallError(f"{path} --version could not run: {exc}") from exc
    found = _VERSION.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise InstallError(f"{path} --version failed (exit {done.returncode}):\n{_tail(done.stdout + done.stderr)}")
    return found.group(0)


def install(tool: str, root: Path) -> Path:
    """Install the pinned CLI under `root` unless it is there already; return its executable."""
    package, version = _pinned(tool)
    existing = find(tool, root)
    if existing is not None:
        return existing
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f"{install_dir(tool, root).name}.lock"):
        existing = find(tool, root)      # another process may have finished while we waited
        if existing is not None:
            return existing
        return _install_locked(tool, package, version, root)


def _install_locked(tool: str, package: str, version: str, root: Path) -> Path:
    """npm install into a staging folder, check the version, then rename into place (never half there)."""
    final = install_dir(tool, root)
    for leftover in root.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    staging = root / f".{final.name}.tmp-{os.getpid()}"
    log.info("agent_cli.install", tool=tool, package=package, version=version, into=str(final))
    try:
        _stage(tool, package, version, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    (staging / COMPLETE_MARKER).write_text(f"{package}@{version}\n", encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    located = find(tool, root)
    if located is None:
        raise InstallError(f"{final} lost its executable when moved into place")
    return located


def _stage(tool: str, package: str, version: str, staging: Path) -> None:
    """Install into `staging` and prove the executable runs and reports the pinned version."""
    _npm_install(package, version, staging)
    if tool == "claude-code":
        _repair_claude_stub(staging)
    exe = _executable(tool, staging)
    if exe is None:
        raise InstallError(f"{package}@{version} installed without a runnable {BINARIES[tool]}")
    reported = version_of(exe)
    if reported != version:
        raise InstallError(f"{package}@{version} installed, but {exe.name} --version says {reported}")
    shutil.rmtree(staging / NPM_CACHE_DIR, ignore_errors=True)


def _npm_install(package: str, version: str, prefix: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise InstallError("npm is not on PATH; install Node.js (with npm) to fetch the agent CLIs")
    prefix.mkdir(parents=True)
    argv = [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--save-exact",
            f"{package}@{version}"]
    # npm's own cache goes inside the staging folder and is dropped once installed: all writes stay in
    # the cache root (never the user's ~/.npm) and 330 MB of tarballs do not linger beside the install.
    env = {**os.environ, "npm_config_cache": str(prefix / NPM_CACHE_DIR)}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
                              timeout=NPM_TIMEOUT_S, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallError(f"{' '.join(argv)} did not finish: {exc}") from exc
    if done.returncode != 0:
        raise InstallError(f"{' '.join(argv)} exited {done.returncode}:\n{_tail(done.stdout + done.stderr)}")


def _repair_claude_stub(folder: Path) -> None:
    """Run the package's own postinstall when npm skipped it (ignore-scripts), so `.bin/claude` is native."""
    script = folder / "node_modules" / "@anthropic-ai" / "claude-code" / "install.cjs"
    node = shutil.which("node")
    if is_native(folder / "node_modules" / ".bin" / "claude") or node is None or not script.is_file():
        return
    subprocess.run([node, str(script)], cwd=script.parent, capture_output=True, check=False,
                   stdin=subprocess.DEVNULL, timeout=NPM_TIMEOUT_S)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock; the kernel drops it if the holder dies, so it never goes stale."""
    with path.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


@click.group()
def main() -> None:
    """Manage the pinned agent CLIs used by the end-to-end tests and the offline demo."""
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout is for the paths


@main.command("install")
@click.argument("tool", type=click.Choice([*sorted(PINNED), "all"]), default="all")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Cache folder (default: $CONVEYOR_CLI_CACHE, $XDG_CACHE_HOME/conveyor/agent-clis, "
                   "~/.cache/conveyor/agent-clis).")
def install_command(tool: str, root: Path | None) -> None:
    """Install TOOL (or all) once and print `<tool> <executable>` per line."""
    where = root if root is not None else cache_root(os.environ)
    for name in sorted(PINNED) if tool == "all" else [tool]:
        try:
            path = install(name, where)
        except InstallError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"{name} {path}")


if __name__ == "__main__":
    main()
