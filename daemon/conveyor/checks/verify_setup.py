"""Where verify commands run, and whether they can run at all: found before any agent round is spent.

Verify runs in the task's workspace, a fresh checkout of the repository: tracked files only, so an ignored
`.venv/` is not there. The repository's own virtualenv (`verify_venv`, default `.venv` of the main
checkout) therefore leads verify's PATH and is named by `VIRTUAL_ENV`: `pytest -q` and `python -m pytest`
find the project's tools, not Conveyor's. A command that cannot start there (a shell operator given to a
program that runs without a shell, a program that is not on that PATH, `python -m` of a module that
interpreter lacks) is a set-up problem no agent can fix: it is reported by `task validate`, `submit`,
`config validate` and `doctor`, and a task holding one fails before its agent starts.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from conveyor.config import Config
from conveyor.core.errors import ConveyorError, GitError
from conveyor.runner.process import run_command
from conveyor.workspace import git

SHELL_OPERATORS = frozenset({"&&", "||", "|", "|&", ";", ";;", "&", ">", ">>", "<", "<<", "2>", "2>>", "&>",
                             "2>&1", ">&2", "1>&2"})
MODULE_PROBE_TIMEOUT_S = 20.0


def venv_dir(config: Config) -> Path | None:
    """The repository's virtualenv verify uses, when it exists (relative paths: from the main checkout)."""
    chosen = config.daemon.verify_venv
    if not chosen:
        return None
    path = Path(os.path.expanduser(chosen))
    path = path if path.is_absolute() else config.repo / path
    return path if (path / "bin").is_dir() else None


def verify_env(config: Config, env: Mapping[str, str]) -> dict[str, str]:
    """`env` with the repository's virtualenv first on PATH (and in VIRTUAL_ENV), when it has one."""
    result = dict(env)
    venv = venv_dir(config)
    if venv is not None:
        result["PATH"] = os.pathsep.join(p for p in (str(venv / "bin"), env.get("PATH", "")) if p)
        result["VIRTUAL_ENV"] = str(venv)
    return result


def where_verify_runs(config: Config) -> str:
    """One sentence for messages: the folder and the PATH verify commands see."""
    venv = venv_dir(config)
    first = f"{venv / 'bin'} first on PATH" if venv else (
        f"no virtualenv ({config.daemon.verify_venv or 'verify_venv: null'} not found), the daemon's PATH")
    return f"in the task's workspace (a checkout of tracked files only), with {first}"


def verify_problems(texts: Sequence[str], config: Config | None, env: Mapping[str, str], *,
                    where: str) -> list[str]:
    """Why each command in `texts` cannot run as verify (empty: all can); `where` names their origin.
    Without a configuration (a file checked outside a repository) only the command's form is checked."""
    problems: list[str] = []
    environment = verify_env(config, env) if config is not None else dict(env)
    for text in texts:
        problem = form_problem(text)
        if problem is None and config is not None:
            problem = _start_problem(shlex.split(text), config, environment)
        if problem:
            problems.append(f"{where} `{text}`: {problem}")
    return problems


def form_problem(text: str) -> str | None:
    """Whether `text` is a valid argv for a program run without a shell."""
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        return f"cannot be split into arguments ({exc}); close the quotes"
    if not argv:
        return "is empty; remove it or write the command"
    operators = [arg for arg in argv if arg in SHELL_OPERATORS]
    if operators:
        return (f"holds the shell operator {operators[0]!r}, but verify runs without a shell, so it would reach "
                f"{argv[0]} as an argument; write it as `sh -c {shlex.quote(text)}`")
    return None


def _start_problem(argv: list[str], config: Config, env: Mapping[str, str]) -> str | None:
    path_value = env.get("PATH", "")
    program = argv[0]
    found: Path | str
    if "/" in program:
        found = _relative_program(program, config)
    else:
        resolved = shutil.which(program, path=path_value)
        if resolved is None:
            return (f"{program!r} is not on verify's PATH ({where_verify_runs(config)}); install it in the "
                    "repository's virtualenv, or set `verify_venv` in daemon.yaml to the one that has it")
        found = Path(resolved)
    if isinstance(found, str):
        return found
    if len(argv) >= 3 and argv[1] == "-m" and Path(program).name.startswith("python"):
        return _module_problem(found, argv[2], config, env)
    return None


def _relative_program(program: str, config: Config) -> Path | str:
    """A program named by path: absolute must exist; relative must be a tracked file of the repository."""
    path = Path(os.path.expanduser(program))
    if path.is_absolute():
        return path if os.access(path, os.X_OK) else f"{program} does not exist or is not executable"
    in_repo = config.repo / path
    if not in_repo.exists():
        return f"{program} is not in the repository"
    try:
        tracked = bool(git.run(config.repo, "ls-files", "--", str(path)).strip())
    except GitError:
        tracked = False
    if not tracked:
        return (f"{program} is not tracked by git, and the task's workspace holds tracked files only (an "
                "ignored .venv/ is not there); name the program alone (`pytest`): verify's PATH starts with "
                "the repository's virtualenv (`verify_venv`)")
    return in_repo


def _module_problem(python: Path, module: str, config: Config, env: Mapping[str, str]) -> str | None:
    """`python -m MODULE`: that interpreter must have the module, or every round fails the same way."""
    probe = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec(sys.argv[1]) else 3)"
    with tempfile.TemporaryDirectory(prefix="conveyor-verify-probe-") as scratch:
        try:
            done = run_command([str(python), "-c", probe, module], cwd=config.repo, env=env,
                               log_path=Path(scratch) / "probe.log", timeout_s=MODULE_PROBE_TIMEOUT_S, check=False)
        except ConveyorError as exc:
            return f"{python} could not be started ({exc})"
    if done.exit_code == 3:
        return (f"{python} has no module {module!r} ({where_verify_runs(config)}); install it in the "
                "repository's virtualenv, or set `verify_venv` in daemon.yaml to the one that has it")
    return None
