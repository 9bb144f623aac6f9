"""Configuration: defaults load, user files merge over them, and every mistake names file, line, field and fix."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conveyor.config import CONFIG_FILES, DEFAULT_AGENT, Config, builtin_text, load_config
from conveyor.config.loader import line_of_path, repo_slug
from conveyor.core.errors import ConfigError, Problem


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / "config").mkdir()
    return path


def write(repo: Path, name: str, text: str) -> Path:
    path = repo / "config" / name
    path.write_text(text, encoding="utf-8")
    return path


def load(repo: Path) -> Config:
    return load_config(repo, repo / ".git")


def problems(repo: Path) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load(repo)
    return caught.value.problems


def one_problem(repo: Path) -> Problem:
    (problem,) = problems(repo)
    return problem


# ------------------------------------------------------------------ defaults and merging
def test_no_config_files_means_the_builtin_defaults(repo: Path) -> None:
    config = load(repo)
    assert config.daemon.base_branch == "main"
    assert {"claude-code", "codex"} <= set(config.tools)
    assert config.tools["claude-code"].binary == "claude"
    assert config.tools["codex"].parser == "codex-jsonl"
    assert DEFAULT_AGENT in config.agents
    assert config.warnings == []


def test_the_builtin_files_validate_when_written_out(repo: Path) -> None:
    for name in CONFIG_FILES:
        write(repo, name, builtin_text(name))
    config = load(repo)
    assert config.agents["default"].tool == "claude-code"
    assert config.models["sonnet"].price is not None


def test_builtin_env_allowlists_match_the_issue(repo: Path) -> None:
    tools = load(repo).tools
    assert set(tools["claude-code"].env_allowlist) >= {"PATH", "HOME", "LANG", "ANTHROPIC_*", "CLAUDE_CODE_*"}
    assert set(tools["codex"].env_allowlist) >= {"PATH", "HOME", "LANG", "OPENAI_*", "CODEX_HOME"}


def test_a_third_cli_needs_only_its_yaml_entry(repo: Path) -> None:
    write(repo, "tools.yaml", "tools:\n  aider:\n    binary: aider\n    argv: [--message, '{prompt}']\n")
    write(repo, "agents.yaml", "agents:\n  default: {tool: aider}\n")
    config = load(repo)
    assert set(config.tools) == {"claude-code", "codex", "aider"}   # merged over the built-in tools
    assert config.agent("anyone") is config.agents["default"]
    assert config.agents["default"].tool == "aider"


def test_an_agent_entry_serves_its_name_and_default_serves_the_rest(repo: Path) -> None:
    write(repo, "agents.yaml", "agents:\n  backend-dev: {tool: codex, model: gpt-5}\n")
    config = load(repo)
    backend = config.agent("backend-dev")
    assert backend is not None and backend.tool == "codex"
    other = config.agent("curator-claire")
    assert other is not None and other.tool == "claude-code"


def test_state_lives_in_the_git_dir_and_worktrees_outside_git_by_default(
        repo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    config = load(repo)
    assert config.state_dir == repo / ".git" / "conveyor"
    assert config.telemetry_db == repo / ".git" / "conveyor" / "telemetry.db"
    assert config.board_root == repo / "work" / "collaboration"
    # Claude Code refuses to edit files under any `.git/` path, so worktrees must not live there.
    worktrees = config.worktrees_dir
    assert worktrees.parent == tmp_path / "state" / "conveyor" / "worktrees"
    assert worktrees.name.startswith("repo-") and ".git" not in worktrees.parts
    other = tmp_path / "elsewhere" / "repo"
    assert repo_slug(other) != repo_slug(repo), "two checkouts named alike must not share worktrees"


def test_relative_and_absolute_paths_are_resolved(repo: Path, tmp_path: Path) -> None:
    write(repo, "daemon.yaml", f"worktrees_dir: {tmp_path / 'wt'}\ntelemetry_db: data/t.db\n")
    config = load(repo)
    assert config.worktrees_dir == tmp_path / "wt"
    assert config.telemetry_db == repo / "data" / "t.db"


def test_an_empty_file_means_defaults(repo: Path) -> None:
    write(repo, "daemon.yaml", "# nothing set\n")
    assert load(repo).daemon.max_parallel == 2


# ------------------------------------------------------------------ typos and wrong values
def test_typo_in_a_key_names_file_line_field_and_the_closest_key(repo: Path) -> None:
    path = write(repo, "daemon.yaml", "base_branch: main\nmax_paralel: 3\n")
    problem = one_problem(repo)
    assert problem.file == str(path)
    assert problem.line == 2
    assert problem.field == "max_paralel"
    assert "unknown key 'max_paralel'" in problem.message
    assert problem.fix.startswith("did you mean 'max_parallel'?")
    assert problem.render().startswith(f"{path}:2: field 'max_paralel': unknown key")


def test_typo_in_a_nested_key(repo: Path) -> None:
    write(repo, "daemon.yaml", "commit:\n  author_nme: Bot\n")
    problem = one_problem(repo)
    assert (problem.field, problem.line) == ("commit.author_nme", 2)
    assert "did you mean 'author_name'?" in problem.fix


def test_typo_inside_a_user_named_entry(repo: Path) -> None:
    write(repo, "agents.yaml", "agents:\n  backend-dev:\n    tool: codex\n    modle: gpt-5\n")
    problem = one_problem(repo)
    assert (problem.field, problem.line) == ("agents.backend-dev.modle", 4)
    assert "did you mean 'model'?" in problem.fix


def test_every_problem_is_reported_at_once(repo: Path) -> None:
    write(repo, "daemon.yaml", "max_paralel: 3\nattempts: 0\n")
    write(repo, "tools.yaml", "tools:\n  x:\n    binary: x\n    argv: ['{prompt}']\n    parser: yaml\n")
    found = {(Path(p.file).name, p.field) for p in problems(repo)}
    assert found == {("daemon.yaml", "max_paralel"), ("daemon.yaml", "attempts"), ("tools.yaml", "tools.x.parser")}


def test_out_of_range_value(repo: Path) -> None:
    write(repo, "daemon.yaml", "max_parallel: 0\n")
    problem = one_problem(repo)
    assert (problem.field, problem.line) == ("max_parallel", 1)
    assert "greater than or equal to 1" in problem.message
    assert "allowed range" in problem.fix


def test_wrong_choice_lists_the_choices(repo: Path) -> None:
    write(repo, "daemon.yaml", "privacy: everything\n")
    problem = one_problem(repo)
    assert problem.field == "privacy"
    assert "'metadata'" in problem.fix and "'full'" in problem.fix


def test_unknown_parser_lists_the_known_ones(repo: Path) -> None:
    write(repo, "tools.yaml", "tools:\n  x:\n    binary: x\n    argv: ['{prompt}']\n    parser: json\n")
    problem = one_problem(repo)
    assert (problem.field, problem.line) == ("tools.x.parser", 5)
    assert "claude-json" in problem.message and "codex-jsonl" in problem.message


def test_missing_required_setting(repo: Path) -> None:
    write(repo, "tools.yaml", "tools:\n  x:\n    argv: ['{prompt}']\n")
    problem = one_problem(repo)
    assert problem.field == "tools.x.binary"
    assert problem.line == 2
    assert "add `binary:`" in problem.fix


def test_invalid_yaml_in_a_config_file(repo: Path) -> None:
    path = write(repo, "policies.yaml", "budgets: [\n  oops\nbackoff: {\n")
    problem = one_problem(repo)
    assert problem.file == str(path)
    assert "not valid YAML" in problem.message
    assert problem.line is not None


def test_a_config_file_that_is_not_a_mapping(repo: Path) -> None:
    write(repo, "daemon.yaml", "- a\n- b\n")
    problem = one_problem(repo)
    assert "must be a mapping" in problem.message
    assert problem.fix


# ------------------------------------------------------------------ cross-file checks
def test_agent_naming_an_unknown_tool_suggests_the_closest(repo: Path) -> None:
    write(repo, "agents.yaml", "agents:\n  default:\n    tool: claud\n")
    problem = one_problem(repo)
    assert (problem.field, problem.line) == ("agents.default.tool", 3)
    assert "unknown tool 'claud'" in problem.message
    assert problem.fix.startswith("did you mean 'claude-code'?")
    assert "known tools: claude-code, codex" in problem.fix


def test_unknown_fallback_tool(repo: Path) -> None:
    write(repo, "agents.yaml", "agents:\n  default:\n    tool: codex\n    fallback: [codex, nope:big]\n")
    problem = one_problem(repo)
    assert problem.field == "agents.default.fallback.1"
    assert "unknown tool 'nope'" in problem.message


def test_unknown_argv_placeholder_names_tool_field_and_line(repo: Path) -> None:
    write(repo, "tools.yaml", "tools:\n  x:\n    binary: x\n    argv: [-p, '{prompt}', --cwd, '{work_dir}']\n")
    problem = one_problem(repo)
    assert (problem.field, problem.line) == ("tools.x.argv", 4)
    assert "unknown placeholder(s) work_dir" in problem.message
    assert "{workdir}" in problem.fix


def test_unknown_placeholder_in_resume_argv(repo: Path) -> None:
    write(repo, "tools.yaml", "tools:\n  x:\n    binary: x\n    argv: ['{prompt}']\n"
                              "    resume_argv: [--resume, '{session}', '{prompt}']\n")
    problem = one_problem(repo)
    assert (problem.field, problem.line) == ("tools.x.resume_argv", 5)
    assert "session" in problem.message


def test_malformed_brace_in_argv(repo: Path) -> None:
    write(repo, "tools.yaml", "tools:\n  x:\n    binary: x\n    argv: ['{prompt}', '--json={']\n")
    problem = one_problem(repo)
    assert problem.field == "tools.x.argv"
    assert "stray" in problem.message


def test_prompt_as_argument_needs_a_prompt_placeholder(repo: Path) -> None:
    write(repo, "tools.yaml", "tools:\n  x:\n    binary: x\n    argv: [--quiet]\n")
    problem = one_problem(repo)
    assert problem.field == "tools.x.argv"
    assert "prompt_via: stdin" in problem.fix


def test_prompt_on_stdin_needs_no_placeholder(repo: Path) -> None:
    write(repo, "tools.yaml", "tools:\n  x:\n    binary: x\n    argv: [--quiet]\n    prompt_via: stdin\n")
    assert load(repo).tools["x"].prompt_via == "stdin"


def test_invalid_limit_regex(repo: Path) -> None:
    write(repo, "tools.yaml", "tools:\n  x:\n    binary: x\n    argv: ['{prompt}']\n    limits:\n"
                              "      overloaded: ['ok', '(unclosed']\n")
    problem = one_problem(repo)
    assert (problem.field, problem.line) == ("tools.x.limits.overloaded.1", 6)


def test_policy_for_an_unknown_tool(repo: Path) -> None:
    write(repo, "policies.yaml", "tools:\n  claude-cod: {max_parallel: 1}\n")
    problem = one_problem(repo)
    assert (problem.field, problem.line) == ("tools.claude-cod", 2)


def test_worktrees_inside_the_working_tree_are_refused(repo: Path) -> None:
    write(repo, "daemon.yaml", "worktrees_dir: build/worktrees\n")
    problem = one_problem(repo)
    assert (problem.field, problem.line) == ("worktrees_dir", 1)
    assert "outside the repository" in problem.fix


def test_the_builtin_default_agent_survives_a_user_agents_file(repo: Path) -> None:
    write(repo, "agents.yaml", "agents: {}\n")
    config = load(repo)
    assert DEFAULT_AGENT in config.agents
    assert config.warnings == []


def test_line_of_path_follows_keys_and_indexes() -> None:
    text = "tools:\n  x:\n    argv:\n      - a\n      - b\n"
    assert line_of_path(text, ["tools", "x", "argv", "1"]) == 5
    assert line_of_path(text, ["tools", "x", "missing"]) == 2
    assert line_of_path("", ["a"]) is None
    assert line_of_path("a: [", ["a"]) is None


# ------------------------------------------------------------------ the review stage and the size gate
def test_review_and_size_settings_load_with_an_agent_override(repo: Path) -> None:
    write(repo, "daemon.yaml", "review: {enabled: true, block_at: high}\nsize: {max_changed_lines: 400}\n")
    write(repo, "agents.yaml", "agents:\n  default: {tool: claude-code}\n"
                               "  careful: {tool: codex, review: {enabled: true, tool: claude-code, rounds: 3}}\n")
    config = load(repo)
    assert (config.daemon.review.enabled, config.daemon.review.block_at) == (True, "high")
    assert config.daemon.size.max_changed_lines == 400 and config.daemon.size.max_changed_files is None
    careful = config.agents["careful"].review
    assert careful is not None and (careful.tool, careful.rounds, careful.required) == ("claude-code", 3, True)
    assert config.tools["claude-code"].review_argv is not None and config.tools["codex"].review_argv is not None


def test_a_review_tool_missing_from_tools_yaml_names_file_line_and_field(repo: Path) -> None:
    write(repo, "daemon.yaml", "review:\n  enabled: true\n  tool: gemini\n")
    problem = one_problem(repo)
    assert (problem.file.endswith("daemon.yaml"), problem.field, problem.line) == (True, "review.tool", 3)
    assert "gemini" in problem.message and "claude-code" in problem.fix


def test_an_unknown_severity_lists_the_choices(repo: Path) -> None:
    write(repo, "daemon.yaml", "review: {block_at: urgent}\n")
    problem = one_problem(repo)
    assert problem.field == "review.block_at" and "'critical'" in problem.fix


def test_a_fleet_board_branch_that_is_the_base_branch_is_refused(repo: Path) -> None:
    write(repo, "daemon.yaml", "base_branch: trunk\nfleet:\n  board_branch: trunk\n")
    problem = one_problem(repo)
    assert (problem.file.endswith("daemon.yaml"), problem.field, problem.line) == (True, "fleet.board_branch", 3)
    assert "never pushes to the base branch" in problem.message and "conveyor/board" in problem.fix


def test_a_fleet_needs_a_remote_and_its_board_branch_defaults_to_conveyors_own(repo: Path) -> None:
    write(repo, "daemon.yaml", "coordination: postgresql://db/conveyor\nremote: {name: null}\n")
    problem = one_problem(repo)
    assert (problem.field, problem.line) == ("remote.name", 2)
    assert "own clone" in problem.fix
    write(repo, "daemon.yaml", "coordination: postgresql://db/conveyor\nremote: {name: origin}\n")
    assert load(repo).daemon.fleet.board_branch == "conveyor/board"


def test_following_pull_requests_in_a_fleet_is_refused_not_silently_lost(repo: Path) -> None:
    write(repo, "daemon.yaml", "coordination: postgresql://db/conveyor\nremote: {name: origin}\n"
                               "follow_up:\n  enabled: true\n")
    problem = one_problem(repo)
    assert (problem.file.endswith("daemon.yaml"), problem.field, problem.line) == (True, "follow_up.enabled", 4)
    assert "fleet" in problem.message and "enabled: false" in problem.fix
    write(repo, "daemon.yaml", "follow_up:\n  enabled: true\n")      # one host: fine
    assert load(repo).daemon.follow_up.enabled is True
