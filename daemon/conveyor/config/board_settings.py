"""What the read-only commands need of the configuration, remembered per repository without pydantic.

`conveyor status` and `conveyor stats` need a handful of resolved values (where the board, the state
folder and the telemetry database are, the privacy mode, the fleet's database, the budgets), yet
validating the five files means importing pydantic and building its models: ~0.2 s of CPU, most of
the command. So the full loader's result for those values is written to
`<git common dir>/conveyor/board-settings.json` under a fingerprint of everything the loader reads (each
file's bytes or absence, the built-in defaults, the folders, the environment variables that decide
default locations, Conveyor's version). A later command whose fingerprint matches uses the remembered
values; any other runs the full loader again, which raises for an invalid configuration exactly as before.
A configuration is never accepted here that the loader did not validate with the same bytes.

This module imports neither pydantic nor the loader.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor import __version__
from conveyor.core import yamlio

if TYPE_CHECKING:
    from conveyor.config.loader import Config

CONFIG_FILES = ("daemon.yaml", "agents.yaml", "tools.yaml", "models.yaml", "policies.yaml")
SETTINGS_FILE = "board-settings.json"     # in <git common dir>/conveyor/, beside the config-dir pointer
LOCATION_ENV = ("HOME", "XDG_STATE_HOME")  # decide default folders (the worktrees, `~` in paths)
_FORMAT = 1


def builtin_text(name: str) -> str:
    """The packaged default of a configuration file (what `conveyor init` writes out)."""
    from importlib import resources

    return resources.files("conveyor").joinpath("defaults", name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class BudgetTerms:
    """One budget of policies.yaml, as `conveyor status` weighs it (scheduling.budgets reads these four)."""

    scope: str
    period: str
    usd: float
    limit: str


@dataclass(frozen=True)
class BoardSettings:
    """The resolved configuration values `conveyor status` and `conveyor stats` read."""

    board_root: Path
    state_dir: Path
    telemetry_db: Path
    privacy: str
    coordination: str | None
    budgets: tuple[BudgetTerms, ...] = ()

    @classmethod
    def of(cls, config: Config) -> BoardSettings:
        """The values from a configuration the loader validated."""
        return cls(board_root=config.board_root, state_dir=config.state_dir, telemetry_db=config.telemetry_db,
                   privacy=config.daemon.privacy, coordination=config.daemon.coordination,
                   budgets=tuple(BudgetTerms(scope=b.scope, period=b.period, usd=b.usd, limit=b.limit)
                                 for b in config.policies.budgets))

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("board_root", "state_dir", "telemetry_db"):
            data[key] = str(data[key])
        data["budgets"] = [asdict(budget) for budget in self.budgets]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BoardSettings:
        """Raises KeyError/TypeError/ValueError for a document this version did not write."""
        coordination = data["coordination"]
        return cls(board_root=Path(str(data["board_root"])), state_dir=Path(str(data["state_dir"])),
                   telemetry_db=Path(str(data["telemetry_db"])), privacy=str(data["privacy"]),
                   coordination=None if coordination is None else str(coordination),
                   budgets=tuple(BudgetTerms(scope=str(b["scope"]), period=str(b["period"]), usd=float(b["usd"]),
                                             limit=str(b["limit"])) for b in data["budgets"]))


def fingerprint(repo: Path, git_dir: Path, config_dir: Path, env: Mapping[str, str]) -> str | None:
    """A digest of everything `load_config` reads for one repository (see the module docstring); None when
    a file cannot be read (the loader then says why)."""
    digest = hashlib.sha256()

    def part(label: str, value: bytes) -> None:
        digest.update(f"{label}\0{len(value)}\0".encode())
        digest.update(value)

    part("format", f"{_FORMAT} {__version__}".encode())
    for label, path in (("repo", repo), ("git_dir", git_dir), ("config_dir", config_dir)):
        part(label, os.fsencode(path))
    for name in LOCATION_ENV:
        part(name, os.fsencode(env.get(name, "\0unset")))
    for name in CONFIG_FILES:
        part("default " + name, builtin_text(name).encode("utf-8"))
        try:
            part(name, (config_dir / name).read_bytes())
        except FileNotFoundError:
            part(name, b"\0missing")
        except OSError:
            return None
    return digest.hexdigest()


def remembered(git_dir: Path, print_: str) -> BoardSettings | None:
    """The settings remembered under this fingerprint, or None (none yet, another one, or unreadable)."""
    try:
        document = json.loads(yamlio.read_limited(git_dir / "conveyor" / SETTINGS_FILE, 64 * 1024))
        if not isinstance(document, dict) or document.get("fingerprint") != print_:
            return None
        return BoardSettings.from_json(document["settings"])
    except (yamlio.YamlProblem, ValueError, KeyError, TypeError):
        return None


def remember(git_dir: Path, print_: str, settings: BoardSettings) -> None:
    """Keep `settings` under this fingerprint for the next command; a folder we cannot write only costs speed."""
    path = git_dir / "conveyor" / SETTINGS_FILE
    text = json.dumps({"fingerprint": print_, "settings": settings.as_json()}, indent=1) + "\n"
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        yamlio.atomic_write(path, text, durable=False)
