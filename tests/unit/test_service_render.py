"""The systemd unit and launchd plist: required settings, escaping checked by systemd itself, plist round trip."""

from __future__ import annotations

import json
import os
import plistlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import REPO_ROOT

from conveyor.service.render import (
    STOP_MARGIN_S,
    ServiceError,
    ServiceParams,
    default_params,
    quote_word,
    render_launchd_plist,
    render_systemd_unit,
)

TEMPLATES = REPO_ROOT / "daemon" / "conveyor" / "service" / "templates"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed "
                                   "(Debian package `systemd`; .ci/run installs it)")
SYSTEMD_BIN = next((p for p in (Path("/lib/systemd/systemd"), Path("/usr/lib/systemd/systemd")) if p.exists()),
                   None)
# A repository path with everything systemd's syntax treats specially: space, quotes, %, $, ;, backslash.
WEIRD_NAME = "we\"ird 'x' $HOME ; \\back %n @y Ünï"
HARDENING_FIELDS = {"NoNewPrivileges", "PrivateUsers", "PrivateTmp", "ProtectSystem", "ProtectKernelTunables",
                    "ProtectKernelModules", "ProtectKernelLogs", "ProtectHostname", "RestrictSUIDSGID",
                    "RestrictRealtime", "LockPersonality", "SystemCallArchitectures",
                    "RestrictAddressFamilies_AF_PACKET"}


def make_params(where: Path, **changes: object) -> ServiceParams:
    repo = where
    fields: dict[str, object] = dict(
        repo=repo, command=(sys.executable, "-m", "conveyor"), state_dir=repo / ".git" / "conveyor",
        log_dir=repo / ".git" / "conveyor" / "logs", path_env="/opt/agents/bin:/usr/bin:/bin",
        extra_rw_paths=(Path("/home/u/.claude"), Path("/home/u/.claude.json")), drain_grace_s=45)
    fields.update(changes)
    return ServiceParams(**fields)  # type: ignore[arg-type]


def directives(unit: str) -> dict[str, list[str]]:
    """Active `Key=value` lines (comments skipped), every value kept in order."""
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


@pytest.fixture
def runtime_dir(tmp_path: Path) -> Path:
    """`systemd-analyze --user` needs an XDG_RUNTIME_DIR, even with no user instance running."""
    path = tmp_path / "runtime"
    path.mkdir()
    return path


def analyze(runtime: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The documented check: XDG_RUNTIME_DIR=$(mktemp -d) systemd-analyze --user verify <unit>."""
    assert SYSTEMD_ANALYZE is not None
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}
    return subprocess.run([SYSTEMD_ANALYZE, "--user", *args], capture_output=True, text=True, env=env,
                          timeout=60, check=False)


def write_unit(directory: Path, params: ServiceParams, text: str | None = None) -> Path:
    path = directory / params.unit_name
    path.write_text(render_systemd_unit(params) if text is None else text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- one source of truth


@pytest.mark.parametrize(("copy", "canonical"), [("conveyor.service", "conveyor.service"),
                                                 ("com.conveyor.agent.plist", "conveyor.plist")])
def test_systemd_dir_holds_the_same_text_as_the_package_templates(copy: str, canonical: str) -> None:
    assert (REPO_ROOT / "systemd" / copy).read_bytes() == (TEMPLATES / canonical).read_bytes()


# ---------------------------------------------------------------- systemd unit


def test_unit_has_every_required_directive(tmp_path: Path) -> None:
    params = make_params(tmp_path / "repo")
    unit = render_systemd_unit(params)
    found = directives(unit)
    expected = {"Type": "notify", "NotifyAccess": "main", "WatchdogSec": "60", "Restart": "on-failure",
                "RestartSec": "10", "KillMode": "mixed", "TimeoutStopSec": str(45 + STOP_MARGIN_S),
                "ExecReload": "/bin/kill -HUP $MAINPID", "WorkingDirectory": str(tmp_path / "repo"),
                "Environment": "PATH=/opt/agents/bin:/usr/bin:/bin", "NoNewPrivileges": "yes",
                "PrivateUsers": "yes", "PrivateTmp": "yes", "ProtectSystem": "strict", "WantedBy": "default.target"}
    assert {key: found.get(key, [None])[0] for key in expected} == expected
    assert int(found["TimeoutStopSec"][0]) > params.drain_grace_s
    assert found["ExecStart"] == [f"{sys.executable} -m conveyor run --repo {tmp_path / 'repo'}"]
    assert not re.search(r"@\{\w+\}", unit), "a placeholder was left unfilled"


def test_only_the_repository_is_a_required_writable_path(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    params = make_params(repo, state_dir=tmp_path / "state", log_dir=tmp_path / "state" / "logs",
                         extra_rw_paths=(Path("/home/u/.codex"), repo / "inside"))
    (rw,) = directives(render_systemd_unit(params))["ReadWritePaths"]
    # log dir inside the state dir and a path inside the repository add nothing; missing ones are skipped ("-")
    assert rw.split() == [str(repo), f"-{tmp_path / 'state'}", "-/home/u/.codex"]


def test_hardening_off_comments_out_every_sandbox_line(tmp_path: Path) -> None:
    unit = render_systemd_unit(make_params(tmp_path / "repo", hardening=False))
    found = directives(unit)
    assert not {"NoNewPrivileges", "ProtectSystem", "ReadWritePaths", "PrivateUsers"} & found.keys()
    assert "# ProtectSystem=strict" in unit
    assert found["Type"] == ["notify"] and found["KillMode"] == ["mixed"]


@needs_analyze
def test_systemd_analyze_verify_accepts_the_rendered_unit(tmp_path: Path, runtime_dir: Path) -> None:
    for params in (make_params(tmp_path / "repo"), make_params(tmp_path / WEIRD_NAME),
                   make_params(tmp_path / "plain", hardening=False)):
        done = analyze(runtime_dir, "verify", str(write_unit(tmp_path, params)))
        assert (done.returncode, done.stdout + done.stderr) == (0, ""), params.repo


@needs_analyze
def test_systemd_analyze_verify_would_catch_a_bad_unit(tmp_path: Path, runtime_dir: Path) -> None:
    """The check above can fail: systemd-analyze reports bad values (on stderr, even with exit code 0)."""
    params = make_params(tmp_path / "repo")
    broken = render_systemd_unit(params).replace("Type=notify", "Type=notfy").replace("WatchdogSec=60", "WatchdogSec=x")
    done = analyze(runtime_dir, "verify", str(write_unit(tmp_path, params, broken)))
    assert "Failed to parse service type" in done.stderr and "WatchdogSec" not in done.stdout


@needs_analyze
def test_systemd_sees_the_hardening_options_as_set(tmp_path: Path, runtime_dir: Path) -> None:
    def set_fields(params: ServiceParams) -> set[str]:
        done = analyze(runtime_dir, "security", "--offline=yes", "--json=short", str(write_unit(tmp_path, params)))
        assert done.returncode == 0, done.stderr
        return {item["json_field"] for item in json.loads(done.stdout) if item["set"]}

    assert set_fields(make_params(tmp_path / "repo")) >= HARDENING_FIELDS
    assert not HARDENING_FIELDS & set_fields(make_params(tmp_path / "repo", hardening=False))


# ---------------------------------------------------------------- systemd's own parser reads the values back


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the unprivileged `systemd --test` can read (pytest's tmp root is private to its owner)."""
    # As root the dump runs as nobody, who must reach this directory: /tmp, whatever TMPDIR says.
    path = Path(tempfile.mkdtemp(prefix="conveyor-unit-", dir="/tmp" if os.geteuid() == 0 else None))
    path.chmod(0o755)
    (path / "runtime").mkdir()
    if os.geteuid() == 0:
        os.chown(path / "runtime", 65534, 65534)  # the user systemd --test runs as must write there
    yield path
    shutil.rmtree(path)


def systemd_dump(directory: Path, unit_name: str) -> dict[str, str]:
    """Load the unit with systemd's own parser (`systemd --test --user`) and return its dumped settings."""
    assert SYSTEMD_BIN is not None
    argv = [str(SYSTEMD_BIN), "--test", "--user", f"--unit={unit_name}"]
    if os.geteuid() == 0:  # systemd refuses test mode as root ("Don't run test mode as root.")
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    env = {"SYSTEMD_UNIT_PATH": f"{directory}:", "XDG_RUNTIME_DIR": str(directory / "runtime"),
           "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SYSTEMD_LOG_LEVEL": "err"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    block = done.stdout.split(f"-> Unit {unit_name}:", 1)[1].split("\t-> Unit ", 1)[0]
    settings: dict[str, str] = {}
    for line in block.splitlines():
        key, sep, value = line.strip().partition(": ")
        if sep:
            settings.setdefault(key, value)  # the first Command Line is ExecStart's
    return settings


def unquote_command_line(line: str) -> list[str]:
    """Undo systemd's dump quoting ("..." with backslash escapes); `$$` is a literal `$` at exec time."""
    words = re.findall(r'"((?:\\.|[^"\\])*)"|(\S+)', line)
    return [re.sub(r"\\(.)", r"\1", quoted) if quoted else bare for quoted, bare in words]


@pytest.mark.skipif(SYSTEMD_BIN is None, reason="systemd is not installed (.ci/run installs it)")
@pytest.mark.skipif(os.geteuid() == 0 and shutil.which("setpriv") is None,
                    reason="running as root and setpriv (util-linux) is missing to drop privileges")
def test_systemd_reads_back_a_repository_path_with_spaces_quotes_percent_and_dollar(shared_dir: Path) -> None:
    repo = Path("/srv") / WEIRD_NAME
    params = make_params(repo, extra_rw_paths=(Path("/home/u/a b"),))
    (shared_dir / params.unit_name).write_text(render_systemd_unit(params), encoding="utf-8")
    (shared_dir / params.unit_name).chmod(0o644)
    dumped = systemd_dump(shared_dir, params.unit_name)
    argv = unquote_command_line(dumped["Command Line"])
    assert all(word.count("$") % 2 == 0 for word in argv), "a lone $ would be expanded as a variable"
    assert [word.replace("$$", "$") for word in argv] == list(params.argv)
    assert dumped["WorkingDirectory"] == str(repo)
    assert dumped["Description"] == f"Conveyor daemon for {repo}"
    assert dumped["ReadWritePaths"] == f"{repo} -/home/u/a b"  # the state dir lies inside the repository
    assert dumped["Environment"] == "PATH=/opt/agents/bin:/usr/bin:/bin"
    assert (dumped["Type"], dumped["KillMode"], dumped["WatchdogSec"]) == ("notify", "mixed", "1min")


# ---------------------------------------------------------------- escaping and refusals


@pytest.mark.parametrize(("word", "command", "expected"), [
    ("/usr/bin/python3", True, "/usr/bin/python3"),
    ("--repo", True, "--repo"),
    ("/a b", False, '"/a b"'),
    ("50%", False, '"50%%"'),
    ("$HOME", True, '"$$HOME"'),
    ("$HOME", False, '"$HOME"'),
    ('say "hi" \\ ok', False, '"say \\"hi\\" \\\\ ok"'),
    ("", True, '""'),
    (";", True, '";"'),
])
def test_quote_word(word: str, command: bool, expected: str) -> None:
    assert quote_word(word, command=command) == expected


@pytest.mark.parametrize("bad", ["/tmp/new\nline", "/tmp/tab\there", "/tmp/bell\x07", "/tmp/\udcff-not-utf8"])
def test_values_a_unit_cannot_hold_are_refused_with_a_sentence(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ServiceError, match="rename"):
        make_params(Path(bad))


@pytest.mark.parametrize("name", ["ends-in-backslash\\", "ends-in-space "])
def test_raw_settings_refuse_what_systemd_would_strip_or_join(tmp_path: Path, name: str) -> None:
    params = make_params(tmp_path / name)
    with pytest.raises(ServiceError, match="line continuation"):
        render_systemd_unit(params)
    assert plistlib.loads(render_launchd_plist(params))["WorkingDirectory"] == str(tmp_path / name)


@pytest.mark.parametrize(("changes", "message"), [
    ({"repo": Path("relative/repo")}, "must be absolute"),
    ({"command": ("python3", "-m", "conveyor")}, "must be absolute"),
    ({"command": ()}, "empty"),
    ({"watchdog_s": 0}, "watchdog_s must be at least 1"),
    ({"drain_grace_s": -1}, "cannot be negative"),
    ({"path_env": "/usr/bin\n/bin"}, "control character"),
])
def test_bad_parameters_are_refused(tmp_path: Path, changes: dict[str, object], message: str) -> None:
    with pytest.raises(ServiceError, match=message):
        make_params(tmp_path / "repo", **changes)


def test_unit_name_is_readable_valid_and_unique_per_path(tmp_path: Path) -> None:
    first, second = make_params(tmp_path / "a" / "my repo!"), make_params(tmp_path / "b" / "my repo!")
    assert re.fullmatch(r"conveyor-my-repo-[0-9a-f]{8}\.service", first.unit_name)
    assert first.unit_name != second.unit_name
    assert re.fullmatch(r"conveyor-repo-[0-9a-f]{8}\.service", make_params(Path("/srv/ÜÜÜ")).unit_name)
    slug_hash = first.unit_name.removeprefix("conveyor-").removesuffix(".service")
    assert first.launchd_label == f"com.conveyor.{slug_hash}"


# ---------------------------------------------------------------- launchd plist


def test_plist_round_trips_through_plistlib_with_the_right_keys(tmp_path: Path) -> None:
    repo = tmp_path / "a <b> & \"c\" %d $e"
    params = make_params(repo)
    plist = plistlib.loads(render_launchd_plist(params))
    assert plist == {
        "Label": params.launchd_label,
        "ProgramArguments": [sys.executable, "-m", "conveyor", "run", "--repo", str(repo)],
        "WorkingDirectory": str(repo),
        "EnvironmentVariables": {"PATH": "/opt/agents/bin:/usr/bin:/bin"},
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 10,
        "ExitTimeOut": 45 + STOP_MARGIN_S,
        "ProcessType": "Standard",
        "StandardOutPath": str(params.log_dir / "service.out.log"),
        "StandardErrorPath": str(params.log_dir / "service.err.log"),
    }
    assert plist["ExitTimeOut"] > params.drain_grace_s


def test_plist_template_fills_every_placeholder(tmp_path: Path) -> None:
    assert b"@{" in (TEMPLATES / "conveyor.plist").read_bytes()
    assert b"@{" not in render_launchd_plist(make_params(tmp_path / "repo"))


# ---------------------------------------------------------------- default_params


def test_default_params_finds_the_agent_clis_and_the_agents_writable_dirs(tmp_path: Path) -> None:
    home, tools = tmp_path / "home", tmp_path / "tools bin"
    for path in (home / ".claude", home / ".codex", home / ".cache", tools):
        path.mkdir(parents=True)
    (home / ".claude.json").write_text("{}")
    claude = tools / "claude"
    claude.write_text("#!/bin/sh\nexit 0\n")
    claude.chmod(0o755)
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {"HOME": str(home), "PATH": f"{tools}:relative/bin::/usr/bin:/usr/bin"}
    params = default_params(repo, env, python="/opt/py/bin/python3")
    entries = params.path_env.split(":")
    assert entries[:2] == [str(tools), "/usr/bin"] and "relative/bin" not in entries and "" not in entries
    assert {"/opt/py/bin", "/bin", "/usr/local/bin"} <= set(entries)
    assert params.missing_tools == ("codex",)
    assert params.command == ("/opt/py/bin/python3", "-m", "conveyor")
    assert set(params.extra_rw_paths) == {home / ".claude", home / ".claude.json", home / ".codex", home / ".cache"}
    assert (params.state_dir, params.log_dir) == (repo / ".git" / "conveyor", repo / ".git" / "conveyor" / "logs")


def test_default_params_adds_the_directory_of_a_cli_found_elsewhere(tmp_path: Path) -> None:
    where = {"codex": "/opt/codex/bin/codex", "claude": "/usr/bin/claude", "node": "/opt/node/bin/node"}
    params = default_params(tmp_path, {"HOME": str(tmp_path), "PATH": "/usr/bin"}, where.get,
                            state_dir=tmp_path / "state", extra_rw_paths=[tmp_path / "worktrees"])
    assert {"/opt/codex/bin", "/opt/node/bin"} <= set(params.path_env.split(":"))
    assert params.missing_tools == ()
    assert params.state_dir == tmp_path / "state" and tmp_path / "worktrees" in params.extra_rw_paths


def test_default_params_resolves_the_repository(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    params = default_params(tmp_path / "link", {"HOME": str(tmp_path), "PATH": "/usr/bin"})
    assert params.repo == (tmp_path / "real").resolve()
    assert params.argv[-2:] == ("--repo", str(params.repo))
