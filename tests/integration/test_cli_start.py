"""What a quick command loads: `conveyor status`, `stats` and `--help` start without the daemon's libraries.

Timing is measured in scripts/bench.py (issue 12: `conveyor status` <= 0.3 s); these tests hold the cause
instead, without a clock: the modules a real `python -X importtime -m conveyor ...` process imports. The
remembered settings that spare `status` the pydantic validation (config.board_settings) are tested for
what must never happen: a changed configuration read as the old one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.config.board_settings import SETTINGS_FILE
from tests.integration.conftest import DAEMON_YAML, ConveyorCli, Repo

# What `conveyor run`, the dashboard and the fleet need, and no quick command does.
DAEMON_ONLY = {"watchdog", "apscheduler", "github", "git", "requests", "psycopg", "starlette", "uvicorn",
               "sse_starlette", "asyncio"}
# Loaded only when a command validates (pydantic) or logs (structlog, which brings rich and asyncio).
ON_DEMAND = {"pydantic", "pydantic_core", "structlog"}


def imported(args: list[str], cwd: Path) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """Every module the real command imports (from -X importtime), and its completed process."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "conveyor", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)
    names = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
             if line.startswith("import time:") and "|" in line}
    assert names, done.stderr
    return names, done


def tops(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


def test_status_validates_once_then_reads_the_remembered_settings(repo: Repo) -> None:
    first, done = imported(["status", "--format", "json"], repo.path)
    assert done.returncode == 0, done.stderr
    assert "pydantic" in tops(first)           # the configuration was validated ...
    assert (repo.git_dir / "conveyor" / SETTINGS_FILE).is_file()   # ... and its settings remembered

    again, done_again = imported(["status", "--format", "json"], repo.path)
    assert done_again.returncode == 0, done_again.stderr
    assert tops(again) & (DAEMON_ONLY | ON_DEMAND | {"rich"}) == set()
    assert json.loads(done_again.stdout)["counts"] == json.loads(done.stdout)["counts"]


def test_status_as_a_table_loads_rich_and_nothing_of_the_daemon(repo: Repo, conveyor_cli: ConveyorCli) -> None:
    conveyor_cli("status", cwd=repo.path)
    names, done = imported(["status"], repo.path)
    assert done.returncode == 0, done.stderr
    assert "daemon: not running" in done.stdout
    assert tops(names) & (DAEMON_ONLY | ON_DEMAND) == set()


def test_stats_loads_neither_the_daemon_nor_pydantic(repo: Repo, conveyor_cli: ConveyorCli) -> None:
    conveyor_cli("status", "--format", "json", cwd=repo.path)
    names, done = imported(["stats", "--format", "json"], repo.path)
    assert done.returncode == 0, done.stderr
    assert tops(names) & (DAEMON_ONLY | ON_DEMAND | {"rich"}) == set()


def test_help_imports_no_subcommand(tmp_path: Path) -> None:
    names, done = imported(["--help"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "status     Show queued, waiting, running, done and failed tasks." in done.stdout
    assert {name for name in names if name.startswith("conveyor.cli.") and name.endswith("_cmd")} == set()
    assert tops(names) & (DAEMON_ONLY | ON_DEMAND | {"rich", "yaml"}) == set()


def test_roadmap_loads_nothing_of_the_daemon(repo: Repo) -> None:
    names, done = imported(["roadmap", "--format", "json"], repo.path)
    assert done.returncode == 0, done.stderr
    assert tops(names) & DAEMON_ONLY == set()


def test_a_changed_configuration_is_validated_again(repo: Repo, conveyor_cli: ConveyorCli) -> None:
    assert conveyor_cli("status", "--format", "json", cwd=repo.path).returncode == 0   # settings remembered

    repo.write_config("daemon.yaml", DAEMON_YAML + "max_paralel: 3\n")
    broken = conveyor_cli("status", "--format", "json", cwd=repo.path)
    assert broken.returncode == 2
    assert "daemon.yaml" in broken.stderr and "unknown key 'max_paralel'" in broken.stderr

    repo.write_config("daemon.yaml", DAEMON_YAML + "board_dir: elsewhere/board\n")
    inbox = repo.path / "elsewhere" / "board" / "inbox"
    inbox.mkdir(parents=True)
    (inbox / "moved-1.yaml").write_text(repo.task_text("moved-1"), encoding="utf-8")
    moved = conveyor_cli("status", "--format", "json", cwd=repo.path)
    assert moved.returncode == 0, moved.stderr
    assert [entry["id"] for entry in json.loads(moved.stdout)["queued"]] == ["moved-1"]


def test_a_changed_environment_is_validated_again(repo: Repo, conveyor_cli: ConveyorCli, tmp_path: Path) -> None:
    """The default worktrees folder follows XDG_STATE_HOME, and the loader refuses one inside the working
    tree: settings remembered under another environment must not skip that check."""
    assert conveyor_cli("status", "--format", "json", cwd=repo.path).returncode == 0
    inside = conveyor_cli("status", "--format", "json", cwd=repo.path, env={"XDG_STATE_HOME": str(repo.path / "s")})
    assert inside.returncode == 2
    assert "is inside the working tree" in inside.stderr


@pytest.mark.parametrize("content", [b"{not json", b'{"fingerprint": "x", "settings": {}}', b"\xff\x00", b"[]"])
def test_damaged_settings_are_ignored_and_rewritten(repo: Repo, conveyor_cli: ConveyorCli, content: bytes) -> None:
    assert conveyor_cli("status", "--format", "json", cwd=repo.path).returncode == 0
    remembered = repo.git_dir / "conveyor" / SETTINGS_FILE
    good = json.loads(remembered.read_text(encoding="utf-8"))
    remembered.write_bytes(content)

    done = conveyor_cli("status", "--format", "json", cwd=repo.path)
    assert done.returncode == 0, done.stderr
    assert json.loads(remembered.read_text(encoding="utf-8")) == good


def test_a_damaged_settings_file_with_the_right_fingerprint_is_ignored(repo: Repo, conveyor_cli: ConveyorCli) -> None:
    assert conveyor_cli("status", "--format", "json", cwd=repo.path).returncode == 0
    remembered = repo.git_dir / "conveyor" / SETTINGS_FILE
    document = json.loads(remembered.read_text(encoding="utf-8"))
    del document["settings"]["state_dir"]
    remembered.write_text(json.dumps(document), encoding="utf-8")

    done = conveyor_cli("status", "--format", "json", cwd=repo.path)
    assert done.returncode == 0, done.stderr
    assert "state_dir" in json.loads(remembered.read_text(encoding="utf-8"))["settings"]


def test_each_help_summary_is_its_commands_own() -> None:
    """`conveyor --help` shows the summaries in cli.main without importing the commands: they must not drift."""
    import importlib

    import click

    from conveyor.cli.main import SUBCOMMANDS

    for name, (module, summary) in SUBCOMMANDS.items():
        command = importlib.import_module(module).command
        assert command.name == name
        assert command.get_short_help_str(200) == click.Command(name, help=summary).get_short_help_str(200), name


LOGGING_PROBE = """
import sys
from conveyor.core.logs import configure_logging_when_used, get_logger
configure_logging_when_used(level="warning")
log = get_logger("probe")
assert "structlog" not in sys.modules, "imported before anything logged"
log.info("probe.quiet")
log.warning("probe.loud", key=1)
assert "structlog" in sys.modules
"""


def test_the_deferred_logging_configuration_holds_at_the_first_log_line() -> None:
    """A quick command logs only if something goes wrong: then structlog is loaded, configured as the CLI
    asked (warnings and worse, on stderr: stdout is the command's output), before the line is written."""
    done = subprocess.run([sys.executable, "-c", LOGGING_PROBE], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "probe.loud" in done.stderr and "probe.quiet" not in done.stderr


def test_the_daemon_loads_the_github_client_and_the_fleet_driver_only_when_used() -> None:
    """Idle RSS (issue 12: <= 80 MB) is mostly import weight: PyGithub with requests is ~40 MB, psycopg ~25 MB.
    A single-host daemon loads them when it first opens a pull request or reads one, or when daemon.yaml
    names a `coordination:` database, never at start."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c",
                           "import conveyor.cli.run_cmd, conveyor.daemon.loop, conveyor.pipeline.pr_watch"],
                          capture_output=True, text=True, timeout=120, check=False)
    names = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
             if line.startswith("import time:") and "|" in line}
    assert done.returncode == 0 and "conveyor.daemon.loop" in names, done.stderr
    assert tops(names) & {"github", "requests", "psycopg", "psycopg_binary"} == set()
