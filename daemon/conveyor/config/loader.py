"""Load and cross-check the five configuration files, reporting every problem with file, line, field and fix.

Each file in `<repo>/config/` is optional: built-in defaults (shipped in the package) are used for a
missing file, and the named entries of a present file (tools, models, agents) are merged over the
built-in ones, one level deep: adding a third CLI means writing only that tool's entry, and pointing
claude-code at another binary means writing only `claude-code: {binary: ...}`.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from conveyor.config.board_settings import CONFIG_FILES, builtin_text
from conveyor.config.models import (
    AgentSettings,
    AgentsFile,
    DaemonSettings,
    ModelSettings,
    ModelsFile,
    PoliciesFile,
    ToolSettings,
    ToolsFile,
)
from conveyor.core import yamlio
from conveyor.core.errors import ConfigError, Problem

_MERGED_SECTIONS = {"agents.yaml": "agents", "tools.yaml": "tools", "models.yaml": "models"}
# Tool and model entries merge one level deep (`claude-code: {binary: ...}` overrides only the binary);
# an agent entry the user writes replaces the built-in one whole: half of a built-in agent (its tier
# models for another CLI, say) silently mixed into the user's definition would route tasks by surprise.
_DEEP_MERGED = frozenset({"tools.yaml", "models.yaml"})
ARGV_PLACEHOLDERS = frozenset({"prompt", "model", "workdir", "max_turns", "max_cost_usd", "session_id", "task_id"})
DEFAULT_AGENT = "default"


@dataclass(frozen=True)
class Config:
    """Validated configuration of one repository, with its derived paths."""

    repo: Path
    config_dir: Path
    daemon: DaemonSettings
    agents: dict[str, AgentSettings]
    tools: dict[str, ToolSettings]
    models: dict[str, ModelSettings]
    policies: PoliciesFile
    git_dir: Path
    warnings: list[Problem] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ), repr=False, compare=False)

    @property
    def board_root(self) -> Path:
        return self.repo / self.daemon.board_dir

    @property
    def state_dir(self) -> Path:
        return _resolve(self.repo, self.daemon.state_dir) if self.daemon.state_dir else self.git_dir / "conveyor"

    @property
    def worktrees_dir(self) -> Path:
        """Where task worktrees go: outside the working tree and outside `.git`.

        Not under the git dir: Claude Code refuses to edit any file whose path runs through `.git/`
        ("a sensitive file"), so a worktree there would make every claude task a no-op. The default is
        the user's XDG state folder, one subfolder per repository.
        """
        chosen = self.daemon.worktrees_dir
        if chosen:
            return _resolve(self.repo, chosen)
        return default_state_home(self.env) / "conveyor" / "worktrees" / repo_slug(self.repo)

    @property
    def telemetry_db(self) -> Path:
        chosen = self.daemon.telemetry_db
        return _resolve(self.repo, chosen) if chosen else self.state_dir / "telemetry.db"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def agent(self, name: str) -> AgentSettings | None:
        """The agent's own entry, else the `default` entry that serves every other name."""
        return self.agents.get(name) or self.agents.get(DEFAULT_AGENT)


def default_state_home(env: dict[str, str]) -> Path:
    """`$XDG_STATE_HOME`, else `~/.local/state` (HOME from `env`)."""
    state = env.get("XDG_STATE_HOME")
    if state:
        return Path(state)
    home = env.get("HOME")
    return (Path(home) if home else Path.home()) / ".local" / "state"


def repo_slug(repo: Path) -> str:
    """`<name>-<8 hex of the path>`: readable, and distinct for two checkouts with the same name."""
    import hashlib

    digest = hashlib.sha256(str(repo.resolve()).encode()).hexdigest()[:8]
    return f"{repo.resolve().name or 'repo'}-{digest}"


def _resolve(repo: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else repo / path


def load_config(repo: Path, git_dir: Path, config_dir: Path | None = None,
                env: dict[str, str] | None = None) -> Config:
    """Load, merge and validate; raise ConfigError listing every problem at once.

    `env` (default: the process environment) decides default locations such as the worktrees folder.
    """
    config_dir = config_dir or repo / "config"
    problems: list[Problem] = []
    docs: dict[str, dict[str, Any]] = {}
    texts: dict[str, tuple[str, str]] = {}
    for name in CONFIG_FILES:
        docs[name], texts[name] = _load_one(config_dir, name, problems)
    parsed = _validate_models(docs, texts, problems)
    if problems:
        raise ConfigError(problems)
    config = Config(repo=repo, config_dir=config_dir, git_dir=git_dir, daemon=parsed["daemon.yaml"],
                    agents=parsed["agents.yaml"].agents, tools=parsed["tools.yaml"].tools,
                    models=parsed["models.yaml"].models, policies=parsed["policies.yaml"],
                    env=dict(os.environ if env is None else env))
    errors, warnings = cross_check(config, texts)
    if errors:
        raise ConfigError(errors)
    config.warnings.extend(warnings)
    return config


def _load_one(config_dir: Path, name: str, problems: list[Problem]) -> tuple[dict[str, Any], tuple[str, str]]:
    """Built-in defaults with the user's file (if any) merged over them; returns (document, (label, text))."""
    default_doc = yamlio.loads(builtin_text(name)) or {}
    path = config_dir / name
    if not path.exists():
        return default_doc, (f"{name} (built-in default)", builtin_text(name))
    label = str(path)
    try:
        text = yamlio.read_limited(path).decode("utf-8-sig")
        user_doc = yamlio.loads(text)
    except (yamlio.YamlProblem, UnicodeDecodeError) as exc:
        problems.append(Problem(label, str(exc), getattr(exc, "fix", ""), line=getattr(exc, "line", None)))
        return default_doc, (label, "")
    if user_doc is None:
        return default_doc, (label, text)
    if not isinstance(user_doc, dict):
        problems.append(Problem(label, "must be a mapping of settings", "see `conveyor init` for an example"))
        return default_doc, (label, text)
    section = _MERGED_SECTIONS.get(name)
    if section and isinstance(user_doc.get(section), dict) and isinstance(default_doc.get(section), dict):
        merged = dict(user_doc)
        merged[section] = (_merge_entries(default_doc[section], user_doc[section]) if name in _DEEP_MERGED
                           else {**default_doc[section], **user_doc[section]})
        return merged, (label, text)
    return user_doc, (label, text)


def _merge_entries(defaults: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """Named entries merged one level deep: `claude-code: {binary: /opt/claude}` overrides only `binary`."""
    merged = dict(defaults)
    for key, value in user.items():
        base = defaults.get(key)
        merged[key] = {**base, **value} if isinstance(base, dict) and isinstance(value, dict) else value
    return merged


_FILE_MODELS: dict[str, type[BaseModel]] = {
    "daemon.yaml": DaemonSettings, "agents.yaml": AgentsFile, "tools.yaml": ToolsFile,
    "models.yaml": ModelsFile, "policies.yaml": PoliciesFile,
}


def _validate_models(docs: dict[str, dict[str, Any]], texts: dict[str, tuple[str, str]],
                     problems: list[Problem]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for name, model in _FILE_MODELS.items():
        label, text = texts[name]
        try:
            parsed[name] = model.model_validate(docs[name])
        except ValidationError as exc:
            problems.extend(_problems_from(exc, model, label, text))
    return parsed


def _problems_from(exc: ValidationError, model: type[BaseModel], label: str, text: str) -> list[Problem]:
    problems = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"] if not str(part).startswith(("function-", "list["))]
        dotted = ".".join(loc) or None
        line = line_of_path(text, loc)
        if error["type"] == "extra_forbidden":
            known = _known_keys(model, loc[:-1])
            close = difflib.get_close_matches(loc[-1], known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            problems.append(Problem(label, f"unknown key '{loc[-1]}'", f"{hint}known keys: {', '.join(known)}",
                                    field=dotted, line=line))
        elif error["type"] == "missing":
            problems.append(Problem(label, "is required but missing", f"add `{loc[-1]}:`", field=dotted,
                                    line=line_of_path(text, loc[:-1])))
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(Problem(label, message[0].lower() + message[1:], _type_fix(error),
                                    field=dotted, line=line))
    return problems


def _type_fix(error: Any) -> str:
    ctx = error.get("ctx") or {}
    if "expected" in ctx:
        return f"use one of {ctx['expected']}"
    if error["type"].startswith(("greater", "less")):
        return "choose a value in the allowed range"
    return "check the value's type against `conveyor init`'s example"


def _known_keys(model: type[BaseModel], loc: list[str]) -> list[str]:
    """Field names of the (nested) model at `loc`, skipping dict keys chosen by the user."""
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if fields is None:
            continue
        if part not in fields:
            continue  # a user-chosen key (agent or tool name): stay at the value's model
        current = _value_model(fields[part].annotation)
    fields = getattr(current, "model_fields", {})
    return sorted(fields)


def _value_model(annotation: Any) -> Any:
    """The model inside `Model`, `dict[str, Model]` or `list[Model]` annotations."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _value_model(arg)
        if found is not None:
            return found
    return None


def line_of_path(text: str, loc: list[str]) -> int | None:
    """1-based line of the YAML node at `loc` (keys and list indexes), or of its nearest ancestor."""
    if not text:
        return None
    try:
        node: Any = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            break
    return line


def cross_check(config: Config, texts: dict[str, tuple[str, str]]) -> tuple[list[Problem], list[Problem]]:
    """Relations between files: agents name real tools, placeholders exist, patterns compile."""
    errors: list[Problem] = []
    warnings: list[Problem] = []
    agents_label, agents_text = texts["agents.yaml"]
    known_tools = sorted(config.tools)
    for name, agent in config.agents.items():
        for index, entry in enumerate([agent.tool, *agent.fallback]):
            tool = entry.split(":", 1)[0]
            if tool not in config.tools:
                where = ["agents", name, "tool"] if index == 0 else ["agents", name, "fallback", str(index - 1)]
                close = difflib.get_close_matches(tool, known_tools, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                errors.append(Problem(agents_label, f"unknown tool '{tool}'",
                                      f"{hint}known tools: {', '.join(known_tools)}",
                                      field=".".join(where), line=line_of_path(agents_text, where)))
    if DEFAULT_AGENT not in config.agents:
        warnings.append(Problem(agents_label, "has no 'default' entry, so tasks for other agent names are "
                                "rejected", "add `default: {tool: claude-code}` under `agents:`", field="agents"))
    errors.extend(_check_tools(config, texts["tools.yaml"]))
    errors.extend(_check_policies(config, texts["policies.yaml"]))
    errors.extend(_check_reviewers(config, texts["daemon.yaml"], texts["agents.yaml"]))
    errors.extend(_check_paths(config, texts["daemon.yaml"]))
    errors.extend(_check_fleet(config, texts["daemon.yaml"]))
    return errors, warnings


def _check_tools(config: Config, source: tuple[str, str]) -> list[Problem]:
    from conveyor.config.argv import ArgvTemplateError, placeholders_in

    label, text = source
    problems = []
    for name, tool in config.tools.items():
        for key in ("argv", "resume_argv", "review_argv"):
            template = getattr(tool, key)
            if template is None:
                continue
            try:
                unknown = placeholders_in(template) - ARGV_PLACEHOLDERS
            except ArgvTemplateError as exc:
                problems.append(Problem(label, str(exc), "use {name} placeholders; write {{ and }} for braces",
                                        field=f"tools.{name}.{key}", line=line_of_path(text, ["tools", name, key])))
                continue
            if unknown:
                problems.append(Problem(label, f"unknown placeholder(s) {', '.join(sorted(unknown))}",
                                        f"use {', '.join('{' + p + '}' for p in sorted(ARGV_PLACEHOLDERS))}",
                                        field=f"tools.{name}.{key}",
                                        line=line_of_path(text, ["tools", name, key])))
        if tool.prompt_via == "argument" and "prompt" not in _safe_placeholders(tool.argv):
            problems.append(Problem(label, "passes the prompt as an argument but argv has no {prompt}",
                                    "add \"{prompt}\" to argv or set `prompt_via: stdin`",
                                    field=f"tools.{name}.argv", line=line_of_path(text, ["tools", name, "argv"])))
        for kind, patterns in tool.limits.model_dump().items():
            for index, pattern in enumerate(patterns):
                try:
                    re.compile(pattern)
                except re.error as exc:
                    where = ["tools", name, "limits", kind, str(index)]
                    problems.append(Problem(label, f"pattern {pattern!r} is not a valid regex ({exc})",
                                            "fix the regular expression", field=".".join(where),
                                            line=line_of_path(text, where)))
    return problems


def _check_reviewers(config: Config, daemon: tuple[str, str], agents: tuple[str, str]) -> list[Problem]:
    """A `review.tool` or `review.fallback` entry must name a tool of tools.yaml (else no review would run)."""
    places = [(daemon, ["review"], config.daemon.review)]
    places += [(agents, ["agents", name, "review"], agent.review) for name, agent in config.agents.items()
               if agent.review is not None]
    problems = []
    for (label, text), where, review in places:
        named = [("tool", review.tool)] if review.tool else []
        named += [(f"fallback.{index}", entry.partition(":")[0]) for index, entry in enumerate(review.fallback or [])]
        for key, tool in named:
            if tool not in config.tools:
                path = [*where, *key.split(".")]
                problems.append(Problem(label, f"review tool '{tool}' is not defined in tools.yaml",
                                        f"use one of {', '.join(sorted(config.tools))}", field=".".join(path),
                                        line=line_of_path(text, path)))
    return problems


def _safe_placeholders(template: list[str | list[str]]) -> set[str]:
    from conveyor.config.argv import ArgvTemplateError, placeholders_in

    try:
        return placeholders_in(template)
    except ArgvTemplateError:
        return {"prompt"}  # already reported as a template error


def _check_policies(config: Config, source: tuple[str, str]) -> list[Problem]:
    label, text = source
    known = f"known tools: {', '.join(sorted(config.tools))}"
    problems = [Problem(label, f"limits for unknown tool '{name}'", known,
                        field=f"tools.{name}", line=line_of_path(text, ["tools", name]))
                for name in config.policies.tools if name not in config.tools]
    for index, budget in enumerate(config.policies.budgets):   # scope: global, an agent, or tool:<name>
        tool = budget.scope.removeprefix("tool:") if budget.scope.startswith("tool:") else None
        if tool is not None and tool not in config.tools:
            problems.append(Problem(label, f"budget for unknown tool '{tool}'", known, field=f"budgets.{index}.scope",
                                    line=line_of_path(text, ["budgets", str(index), "scope"])))
    return problems


def _check_paths(config: Config, source: tuple[str, str]) -> list[Problem]:
    label, text = source
    worktrees = config.worktrees_dir.resolve()
    repo = config.repo.resolve()
    git_dir = config.git_dir.resolve()
    inside_tree = worktrees.is_relative_to(repo) and not worktrees.is_relative_to(git_dir)
    if inside_tree:
        return [Problem(label, f"{worktrees} is inside the working tree", "choose a folder outside the "
                        "repository (or leave it unset for <git dir>/conveyor/worktrees)",
                        field="worktrees_dir", line=line_of_path(text, ["worktrees_dir"]))]
    return []


def _check_fleet(config: Config, source: tuple[str, str]) -> list[Problem]:
    """A fleet's board leader pushes board moves to `fleet.board_branch`: never the base branch; and every
    node works in its own clone, so they need a remote to share task branches and the board through."""
    label, text = source
    settings = config.daemon
    problems = []
    if settings.fleet.board_branch.strip("/") in (settings.base_branch, f"refs/heads/{settings.base_branch}"):
        problems.append(Problem(label, f"'{settings.fleet.board_branch}' is the base branch; Conveyor never "
                                "pushes to the base branch", "set it to a branch of Conveyor's own, e.g. "
                                "`fleet: {board_branch: conveyor/board}`", field="fleet.board_branch",
                                line=line_of_path(text, ["fleet", "board_branch"])))
    if settings.coordination is not None and not settings.remote.name:
        problems.append(Problem(label, "is null, but a fleet (coordination:) shares task branches and the board "
                                "through a remote", "set `remote: {name: origin, push: true}` (each node "
                                "works in its own clone of that remote)", field="remote.name",
                                line=line_of_path(text, ["remote", "name"])))
    if settings.coordination is not None and settings.follow_up.enabled:
        # the watcher writes follow-up tasks into its own clone's inbox/, which a fleet node never reads:
        # refused rather than a request that silently goes nowhere
        problems.append(Problem(label, "is true, but following pull requests is not supported in a fleet "
                                "(coordination:) yet: its follow-up tasks would land in one node's clone, "
                                "where no node reads them", "set `follow_up: {enabled: false}` in a fleet, "
                                "or run that repository on one host",
                                field="follow_up.enabled", line=line_of_path(text, ["follow_up", "enabled"])))
    return problems
