"""The task model: seed-compatible files load, bad ones are refused naming field, line and fix."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conveyor.core.errors import Problem, TaskFileError
from conveyor.core.task import (
    SAFE_NAME,
    branch_name_problem,
    is_task_name,
    line_of,
    new_task_document,
    parse_task,
    slugify,
    task_id_from_path,
    validate_document,
)

SEED_STYLE = """\
id: "2025-11-23T2134-curator-add-github-issue-type-for-orch-task"
agent: curator
status: new
priority: normal

title: "Create github issue type for orchestration task"

artefacts:
  - docs/architecture/async_orchestration_technical_design.md

context:
  repo: "sddevelopment-be/quickstart_agent-augmented-development"
  branch: "main"
  notes:
    - "Read the existing orchestration design document"

created_at: "2025-11-23T19:34:00Z"
created_by: "stijn"
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(TaskFileError) as caught:
        parse_task(path)
    return caught.value.problems


# ------------------------------------------------------------------ valid files
def test_seed_style_yml_file_loads_with_its_fields(tmp_path: Path) -> None:
    path = write(tmp_path, "2025-11-23T2134-curator-add-github-issue-type-for-orch-task.yml", SEED_STYLE)
    task = parse_task(path)
    assert task.id == "2025-11-23T2134-curator-add-github-issue-type-for-orch-task"
    assert task.agent == "curator"
    assert task.title == "Create github issue type for orchestration task"
    assert task.artefacts == ["docs/architecture/async_orchestration_technical_design.md"]
    assert task.priority == "normal"
    assert task.base_branch == "main"
    assert task.context["notes"] == ["Read the existing orchestration design document"]
    assert task.created_at == "2025-11-23T19:34:00Z"
    assert task.warnings == []


def test_unknown_keys_are_kept_in_order(tmp_path: Path) -> None:
    text = "id: t\nagent: a\nacceptance_criteria: [x]\nestimated_hours: 4\nartefacts: []\ntags: [a, b]\n"
    task = parse_task(write(tmp_path, "t.yaml", text))
    assert list(task.data) == ["id", "agent", "acceptance_criteria", "estimated_hours", "artefacts", "tags"]
    assert task.data["estimated_hours"] == 4


def test_artifacts_is_an_alias_of_artefacts(tmp_path: Path) -> None:
    task = parse_task(write(tmp_path, "t.yaml", "id: t\nagent: a\nartifacts: [src/a.py, src/b.py]\n"))
    assert task.artefacts == ["src/a.py", "src/b.py"]
    assert task.warnings == []


def test_missing_artefacts_is_a_warning_not_an_error(tmp_path: Path) -> None:
    task = parse_task(write(tmp_path, "t.yaml", "id: t\nagent: a\n"))
    assert task.artefacts == []
    assert [w.field for w in task.warnings] == ["artefacts"]
    assert "artefacts: [" in task.warnings[0].fix


@pytest.mark.parametrize(("written", "priority", "rank"), [("HIGH", "high", 1), ("Critical", "critical", 0),
                                                           ("low", "low", 4), ("medium", "medium", 2)])
def test_priority_is_case_insensitive(tmp_path: Path, written: str, priority: str, rank: int) -> None:
    task = parse_task(write(tmp_path, "t.yaml", f"id: t\nagent: a\nartefacts: []\npriority: {written}\n"))
    assert (task.priority, task.priority_rank) == (priority, rank)
    assert task.warnings == []


def test_unknown_priority_is_normal_with_a_warning_naming_its_line(tmp_path: Path) -> None:
    task = parse_task(write(tmp_path, "t.yaml", "id: t\nagent: a\nartefacts: []\npriority: urgent\n"))
    assert task.priority == "normal"
    (warning,) = task.warnings
    assert (warning.field, warning.line) == ("priority", 4)
    assert "critical, high, medium, normal or low" in warning.fix


def test_missing_priority_is_normal(tmp_path: Path) -> None:
    assert parse_task(write(tmp_path, "t.yaml", "id: t\nagent: a\n")).priority == "normal"


def test_context_as_a_string_becomes_a_note(tmp_path: Path) -> None:
    task = parse_task(write(tmp_path, "t.yaml", "id: t\nagent: a\ncontext: keep the API stable\n"))
    assert task.context == {"notes": ["keep the API stable"]}
    assert task.base_branch is None


def test_dependencies_ignore_entries_that_are_not_ids_with_a_warning(tmp_path: Path) -> None:
    text = "id: t\nagent: a\nartefacts: []\ndependencies:\n  - other-task\n  - DDR-011 (completed)\n"
    task = parse_task(write(tmp_path, "t.yaml", text))
    assert task.dependencies == ["other-task"]
    (warning,) = task.warnings
    assert warning.field == "dependencies" and warning.line == 4
    assert "DDR-011 (completed)" in warning.message


def test_dependencies_given_as_mappings_load_like_the_seed_board(tmp_path: Path) -> None:
    """The seed board writes `dependencies: [{type: prerequisite, task_id: ...}]`: the task waits for that id
    (issue 15 changed this: such entries used to be ignored with a warning, and the task ran regardless)."""
    text = ("id: t\nagent: a\nartefacts: []\ndependencies:\n  - type: prerequisite\n    task_id: other\n"
            "    description: must be done\n")
    task = parse_task(write(tmp_path, "t.yaml", text))
    assert task.dependencies == ["other"]
    assert task.warnings == []


def test_dependencies_under_context_as_the_upstream_template_puts_them(tmp_path: Path) -> None:
    text = ("id: t\nagent: a\nartefacts: []\ndependencies: [top]\n"
            "context:\n  branch: main\n  dependencies: [first, top]\n")
    assert parse_task(write(tmp_path, "t.yaml", text)).dependencies == ["top", "first"]


def test_a_dependencies_mapping_is_accepted_and_only_its_ids_count(tmp_path: Path) -> None:
    """The seed board's `dependencies: {prerequisites: [prose], ...}` (which the upstream validator accepts)
    loads; prose is no id, and a mapping naming no id at all says so in a warning."""
    prose = ("id: t\nagent: a\nartefacts: []\ndependencies:\n  prerequisites:\n  - Hugo installed locally\n"
             "  related_work:\n  - ADR-022 (docsite metadata strategy) - inform decision\n")
    task = parse_task(write(tmp_path, "t.yaml", prose))
    assert task.dependencies == []
    assert [w.field for w in task.warnings] == ["dependencies"]
    ids = "id: u\nagent: a\nartefacts: []\ndependencies:\n  requires: [first]\n  after: {task_id: second}\n"
    task = parse_task(write(tmp_path, "u.yaml", ids))
    assert task.dependencies == ["first", "second"] and task.warnings == []


def test_complexity_is_read_case_insensitively(tmp_path: Path) -> None:
    task = parse_task(write(tmp_path, "t.yaml", "id: t\nagent: a\nartefacts: []\ncomplexity: HIGH\n"))
    assert task.complexity == "high"
    task = parse_task(write(tmp_path, "u.yaml", "id: u\nagent: a\nartefacts: []\ncomplexity: huge\n"))
    assert task.complexity is None
    assert [w.field for w in task.warnings] == ["complexity"]


def test_accessors_for_daemon_fields(tmp_path: Path) -> None:
    text = "id: t\nagent: a\nattempt: 2\ntimeout_s: 30\ntool: fake\nverify: [make test]\ncreated: '2026-01-01'\n"
    task = parse_task(write(tmp_path, "t.yaml", text))
    assert task.attempt == 2
    assert task.get_number("timeout_s") == 30.0
    assert task.get_str("tool") == "fake"
    assert task.get_list("verify") == ["make test"]
    assert task.created_at == "2026-01-01"
    assert task.title == "t"  # no title: the id stands in


# ------------------------------------------------------------------ refused files
def test_missing_id_and_agent_are_both_reported_with_fixes(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, "t.yaml", "title: nothing else\n"))
    by_field = {p.field: p for p in problems}
    assert set(by_field) == {"id", "agent"}
    assert "id: <the file name without .yaml>" in by_field["id"].fix
    assert "agent: backend-dev" in by_field["agent"].fix
    assert all(p.file.endswith("t.yaml") for p in problems)


def test_id_must_equal_the_file_name(tmp_path: Path) -> None:
    (problem,) = problems_of(write(tmp_path, "right-name.yaml", "agent: a\nid: wrong-name\n"))
    assert problem.field == "id" and problem.line == 2
    assert "right-name.yaml" in problem.message
    assert problem.fix == "rename the file to wrong-name.yaml or set `id: right-name`"


@pytest.mark.parametrize("bad_id", ["../escape", "a/b", ".hidden", "has space", "semi;colon", "x" * 129, "-dash",
                                    "ünicode"])
def test_unsafe_ids_are_refused(tmp_path: Path, bad_id: str) -> None:
    path = write(tmp_path, "t.yaml", f"id: {bad_id!r}\nagent: a\n".replace("'", '"'))
    problems = problems_of(path)
    unsafe = [p for p in problems if "not a safe id" in p.message]
    assert unsafe and unsafe[0].field == "id" and unsafe[0].line == 1
    assert "letters, digits" in unsafe[0].fix


@pytest.mark.parametrize("bad_id", ["x..y", "abc.lock", "trailing.", "a...b"])
def test_ids_git_refuses_as_a_branch_name_are_refused_with_the_fix(tmp_path: Path, bad_id: str) -> None:
    (problem,) = problems_of(write(tmp_path, f"{bad_id}.yaml", f"id: {bad_id}\nagent: a\n"))
    assert problem.field == "id" and problem.line == 1
    assert f"conveyor/{bad_id}" in problem.message
    assert "rename the file" in problem.fix


@pytest.mark.parametrize("task_id", ["x..y", "abc.lock", "trailing.", "a...b", "ok.lockfile", "v1.2", "a.b-c_d",
                                     "x.lock.y", "Z9", "dots.ok"])
def test_the_branch_rule_agrees_with_git_itself(task_id: str) -> None:
    git_says = subprocess.run(["git", "check-ref-format", "--branch", f"conveyor/{task_id}"], capture_output=True,
                              check=False).returncode == 0
    assert (branch_name_problem(task_id) is None) == git_says


@pytest.mark.parametrize("title", ['""', "'   '", "", "\"\\e[0m\\t\""])
def test_a_blank_title_is_refused_with_the_fix(tmp_path: Path, title: str) -> None:
    (problem,) = problems_of(write(tmp_path, "t.yaml", f"id: t\nagent: a\ntitle: {title}\n"))
    assert problem.field == "title" and problem.line == 3
    assert problem.message.endswith("is blank") and "one-line title" in problem.fix


@pytest.mark.parametrize("bad_agent", ["../x", "a/b", ".hidden", "back end", "x\\y", ""])
def test_unsafe_agent_names_are_refused(tmp_path: Path, bad_agent: str) -> None:
    path = write(tmp_path, "t.yaml", f'id: t\nagent: "{bad_agent}"\n'.replace("\\", "\\\\"))
    (problem,) = problems_of(path)
    assert problem.field == "agent" and problem.line == 2
    assert "not a safe agent name" in problem.message


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "a list"), ("just text\n", "a str"), ("", "empty"),
                                            ("42\n", "a int")])
def test_a_document_that_is_not_a_mapping_is_refused(tmp_path: Path, text: str, kind: str) -> None:
    (problem,) = problems_of(write(tmp_path, "t.yaml", text))
    assert f"is {kind}, not a mapping" in problem.message
    assert "id:" in problem.fix


def test_invalid_yaml_is_refused_with_its_line(tmp_path: Path) -> None:
    (problem,) = problems_of(write(tmp_path, "t.yaml", "id: t\nagent: a\ntitle: [unclosed\n"))
    assert "not valid YAML" in problem.message
    assert problem.line is not None and problem.line >= 3
    assert problem.render().startswith(f"{tmp_path / 't.yaml'}:{problem.line}:")


@pytest.mark.parametrize(("field", "value", "fix"), [
    ("artefacts", "{a: 1}", "list of paths"),
    ("dependencies", "7", "list of task ids"),
    ("context", "[1, 2]", "mapping"),
    ("verify", "make test", "list of commands"),
])
def test_wrong_types_name_field_line_and_fix(tmp_path: Path, field: str, value: str, fix: str) -> None:
    problems = problems_of(write(tmp_path, "t.yaml", f"id: t\nagent: a\n{field}: {value}\n"))
    assert {p.field for p in problems} == {field}
    assert all(p.line == 3 and fix in p.fix for p in problems)


def test_render_names_file_line_field_and_fix(tmp_path: Path) -> None:
    (problem,) = problems_of(write(tmp_path, "t.yaml", "id: other\nagent: a\n"))
    rendered = problem.render()
    assert rendered.startswith(f"{tmp_path / 't.yaml'}:1: field 'id':")
    assert "Fix: rename the file" in rendered


def test_expected_id_overrides_the_file_name(tmp_path: Path) -> None:
    path = write(tmp_path, "t.yaml", "id: t\nagent: a\n")
    with pytest.raises(TaskFileError, match="is 't'"):
        parse_task(path, expected_id="something-else")


def test_size_cap_applies(tmp_path: Path) -> None:
    path = write(tmp_path, "t.yaml", "id: t\nagent: a\n" + "# pad\n" * 100)
    with pytest.raises(TaskFileError, match="over the 200-byte limit"):
        parse_task(path, max_bytes=200)


def test_validate_document_without_a_file(tmp_path: Path) -> None:
    task = validate_document(tmp_path / "x.yaml", {"id": "x", "agent": "a", "artefacts": []}, "")
    assert task.id == "x"


# ------------------------------------------------------------------ names and helpers
@pytest.mark.parametrize(("name", "expected"), [
    ("t.yaml", True), ("t.yml", True), (".t.yaml", False), ("t.yaml~", False), ("t.yaml.tmp", False),
    (".t.yaml.swp", False), ("t.yaml.swp", False), ("t.txt", False), ("t", False), ("t.yaml.error.yaml", True),
])
def test_is_task_name(name: str, expected: bool) -> None:
    assert is_task_name(name) is expected


def test_task_id_from_path() -> None:
    assert task_id_from_path(Path("a/b/x.yaml")) == "x"
    assert task_id_from_path(Path("x.yml")) == "x"
    assert task_id_from_path(Path("x.v2.yaml")) == "x.v2"


def test_line_of_finds_top_level_keys_only() -> None:
    text = "id: a\ncontext:\n  agent: nested\nagent: top\n"
    assert line_of(text, "agent") == 4
    assert line_of(text, "missing") is None


def test_safe_name_pattern() -> None:
    assert SAFE_NAME.match("2026-11-23T0900-backend-dev_x.1")
    assert not SAFE_NAME.match("a" * 129)
    assert SAFE_NAME.match("a" * 128)


def test_new_task_document_is_valid_and_ordered(tmp_path: Path) -> None:
    document = new_task_document(task_id="t", agent="a", title="T", description="D", artefacts=["x"],
                                 created_at="2026-11-23T09:00:00Z", created_by="me", extra={"complexity": "low"})
    assert list(document) == ["id", "agent", "status", "title", "description", "artefacts", "priority",
                              "dependencies", "complexity", "created_at", "created_by"]
    task = validate_document(tmp_path / "t.yaml", document, "")
    assert task.warnings == []


@pytest.mark.parametrize(("title", "slug"), [("Add a /health endpoint!", "add-a-health-endpoint"), ("???", "task"),
                                             ("Ünïcode & more", "n-code-more")])
def test_slugify(title: str, slug: str) -> None:
    assert slugify(title) == slug
    assert SAFE_NAME.match(slugify(title))
