"""Bad input: each kind is rejected with a message naming the file and the field, and the same run still
completes the good tasks beside it."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ConveyorCli, DaemonRun, Repo

GOOD = "good-neighbour"


@dataclass(frozen=True)
class Case:
    name: str                     # file name in inbox/
    content: str | bytes
    field: str | None             # the field a problem must name (None: the file as a whole)
    message: str                  # a fragment of that problem's message


CASES = [
    Case("invalid-yaml.yaml", "id: invalid-yaml\nagent: dev\ntitle: [unclosed\n", None, "not valid YAML"),
    Case("list-doc.yaml", "- id: list-doc\n- agent: dev\n", None, "not a mapping"),
    Case("empty-doc.yaml", "", None, "is empty"),
    Case("no-id.yaml", "agent: dev\ntitle: x\n", "id", "is missing"),
    Case("no-agent.yaml", "id: no-agent\ntitle: x\n", "agent", "is missing"),
    Case("name-mismatch.yaml", "id: another-name\nagent: dev\n", "id", "but the file is named 'name-mismatch.yaml'"),
    Case("slash-id.yaml", "id: a/b\nagent: dev\n", "id", "not a safe id"),
    Case("dotdot-id.yaml", "id: ..\nagent: dev\n", "id", "not a safe id"),
    Case("dot-id.yaml", "id: .dot-id\nagent: dev\n", "id", "not a safe id"),
    Case("bad char!.yaml", "id: bad char!\nagent: dev\n", "id", "not a safe id"),
    Case("agent-slash.yaml", "id: agent-slash\nagent: ../../etc\n", "agent", "not a safe agent name"),
    Case("agent-dotdot.yaml", "id: agent-dotdot\nagent: ..\n", "agent", "not a safe agent name"),
    Case("agent-dot.yaml", "id: agent-dot\nagent: .hidden\n", "agent", "not a safe agent name"),
    Case("agent-space.yaml", "id: agent-space\nagent: back end\n", "agent", "not a safe agent name"),
    Case("agent-backslash.yaml", "id: agent-backslash\nagent: 'a\\b'\n", "agent", "not a safe agent name"),
    Case("wrong-type.yaml", "id: wrong-type\nagent: dev\nartefacts: {a: 1}\n", "artefacts", "valid list"),
    Case("binary.yaml", b"id: binary\nagent: dev\n\x00\x01\x02", None, "NUL bytes"),
    Case("latin1.yaml", "id: latin1\nagent: dev\ntitle: caf\xe9\n".encode("latin-1"), None, "not valid UTF-8"),
    Case("huge.yaml", "id: huge\nagent: dev\n" + "# padding\n" * 110_000, None, "over the 1048576-byte limit"),
]


def check_rejected(repo: Repo, run: DaemonRun, name: str, field: str | None, fragment: str) -> dict[str, Any]:
    """The file sits in done/_rejected/ beside `<name>.error.yaml` naming it, the field, and a fix."""
    assert not os.path.lexists(repo.inbox / name)
    assert os.path.lexists(repo.rejected / name)
    report = repo.rejected_report(name)
    assert report["file"] == name
    problems = report["problems"]
    assert problems and all(p["file"] == name and p.get("fix") for p in problems), problems
    matching = [p for p in problems if p.get("field") == field and fragment in p["message"]]
    assert matching, problems
    logged = [e for e in run.events("task.rejected") if e["file"] == name]
    assert logged and any(fragment in line for line in logged[0]["problems"])
    return report


def check_good_neighbour_done(repo: Repo) -> None:
    document = repo.done_doc(GOOD)
    assert document["status"] == "done"
    assert document["result"]["commit"]


def submit_good(repo: Repo) -> None:
    repo.submit(GOOD, description="FAKE write good.txt fine")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_file_is_rejected_and_the_run_goes_on(repo: Repo, case: Case) -> None:
    repo.drop(case.name, case.content)
    submit_good(repo)
    run = repo.run_once()
    assert run.code == 0
    report = check_rejected(repo, run, case.name, case.field, case.message)
    data = case.content.encode() if isinstance(case.content, str) else case.content
    assert (repo.rejected / case.name).read_bytes() == data     # moved unchanged
    if case.field is not None:
        assert any(p.get("line") for p in report["problems"] if p.get("field") == case.field) or \
            "missing" in case.message
    check_good_neighbour_done(repo)


def test_invalid_yaml_report_names_the_line(repo: Repo) -> None:
    repo.drop("bad.yaml", "id: bad\nagent: dev\ndescription: fine\ntitle: [unclosed\nother: 1\n")
    run = repo.run_once()
    report = check_rejected(repo, run, "bad.yaml", None, "not valid YAML")
    assert report["problems"][0]["line"] >= 4
    assert "inbox/bad.yaml" in report["what_to_do"]


# ------------------------------------------------------------------ things that are not files
def test_a_symlink_is_rejected_and_its_target_untouched(repo: Repo, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.yaml"
    target.write_text("id: link\nagent: dev\n")
    (repo.inbox / "link.yaml").symlink_to(target)
    submit_good(repo)
    run = repo.run_once()
    check_rejected(repo, run, "link.yaml", None, "symbolic link")
    assert (repo.rejected / "link.yaml").is_symlink()
    assert target.read_text() == "id: link\nagent: dev\n"
    check_good_neighbour_done(repo)


def test_a_directory_is_rejected(repo: Repo) -> None:
    (repo.inbox / "folder.yaml").mkdir()
    (repo.inbox / "folder.yaml" / "inner.yaml").write_text("id: inner\nagent: dev\n")
    submit_good(repo)
    run = repo.run_once()
    check_rejected(repo, run, "folder.yaml", None, "directory")
    assert (repo.rejected / "folder.yaml" / "inner.yaml").exists()
    check_good_neighbour_done(repo)


@pytest.mark.timeout(60)
def test_a_fifo_is_rejected_without_blocking(repo: Repo) -> None:
    os.mkfifo(repo.inbox / "pipe.yaml")
    submit_good(repo)
    run = repo.run_once()
    check_rejected(repo, run, "pipe.yaml", None, "special file")
    check_good_neighbour_done(repo)


# ------------------------------------------------------------------ duplicates and cycles
def test_the_same_id_twice_in_inbox_runs_once(repo: Repo) -> None:
    repo.drop("dup.yaml", repo.task_text("dup", description="FAKE write first.txt x"))
    repo.drop("dup.yml", repo.task_text("dup", description="FAKE write second.txt x"))
    run = repo.run_once()
    check_rejected(repo, run, "dup.yml", "id", "duplicates the id of dup.yaml")
    assert repo.done_doc("dup")["result"]["artefacts"] == ["first.txt"]
    assert len(repo.rows("dup")) == 1


def test_an_id_that_is_already_done_is_rejected(repo: Repo) -> None:
    repo.submit("once", description="FAKE write once.txt x")
    repo.run_once()
    first = repo.done_path("once").read_text()
    repo.submit("once", description="FAKE write twice.txt x")
    submit_good(repo)
    run = repo.run_once()
    check_rejected(repo, run, "once.yaml", "id", "already on the board")
    assert repo.done_path("once").read_text() == first
    assert len(repo.rows("once")) == 1
    check_good_neighbour_done(repo)


def test_an_id_done_under_another_agent_is_rejected(repo: Repo) -> None:
    repo.submit("shared-id", agent="json-agent", description="nothing")
    repo.run_once()
    repo.submit("shared-id", agent="backend-dev", description="nothing")
    run = repo.run_once()
    check_rejected(repo, run, "shared-id.yaml", "id", "already on the board")


def test_a_dependency_cycle_is_rejected_naming_the_cycle(repo: Repo) -> None:
    repo.submit("cyc-a", dependencies=["cyc-b"])
    repo.submit("cyc-b", dependencies=["cyc-a"])
    repo.submit("after-cycle", dependencies=["cyc-a"])
    submit_good(repo)
    run = repo.run_once()
    for name in ("cyc-a.yaml", "cyc-b.yaml"):
        report = check_rejected(repo, run, name, "dependencies", "dependency cycle")
        assert "cyc-a → cyc-b" in report["problems"][0]["message"]
    check_good_neighbour_done(repo)
    # downstream of the cycle: it waits (its dependency is gone from the board), it is not lost
    assert (repo.inbox / "after-cycle.yaml").exists()


# ------------------------------------------------------------------ tools
def test_an_unknown_tool_binary_fails_the_task_saying_how_to_fix_it(repo: Repo) -> None:
    repo.submit("needs-ghost", description="FAKE write a.txt x", tool="ghost")
    submit_good(repo)
    repo.run_once()
    document = repo.done_doc("needs-ghost")
    assert document["status"] == "error"
    message = document["error"]["message"]
    assert "'conveyor-test-no-such-agent-cli'" in message and "PATH" in message          # what is wrong
    assert "tools.ghost.binary" in message and "config/tools.yaml" in message          # and how to fix it
    assert document["error"]["kind"] == "no_tool"
    assert repo.worktrees() == [str(repo.path)]
    check_good_neighbour_done(repo)


def test_a_task_pinning_a_tool_that_is_not_configured_fails_clearly(repo: Repo) -> None:
    repo.submit("needs-nothing", tool="no-such-tool")
    repo.run_once()
    document = repo.done_doc("needs-nothing")
    assert document["status"] == "error"
    assert "no-such-tool" in document["error"]["message"]


# ------------------------------------------------------------------ timing of unreadable files
def test_a_fresh_unreadable_file_is_still_rejected_by_a_once_run(repo: Repo) -> None:
    repo.drop("fresh.yaml", "id: fresh\nagent: [\n", settled=False)
    run = repo.run_once()
    check_rejected(repo, run, "fresh.yaml", None, "not valid YAML")


@pytest.mark.timeout(60)
def test_an_unreadable_file_dated_in_the_future_does_not_stall(repo: Repo) -> None:
    path = repo.drop("future.yaml", "id: future\nagent: [\n")
    later = time.time() + 3600
    os.utime(path, (later, later))
    run = repo.run_once()
    check_rejected(repo, run, "future.yaml", None, "not valid YAML")


def test_every_kind_at_once_in_one_run(repo: Repo, tmp_path: Path) -> None:
    for case in CASES:
        repo.drop(case.name, case.content)
    os.mkfifo(repo.inbox / "pipe.yaml")
    (repo.inbox / "folder.yaml").mkdir()
    (repo.inbox / "link.yaml").symlink_to(tmp_path / "nowhere.yaml")
    for index in range(3):
        repo.submit(f"good-{index}", description=f"FAKE write good-{index}.txt x")
    run = repo.run_once()
    assert run.code == 0
    expected: list[tuple[str, str | None, str]] = [(c.name, c.field, c.message) for c in CASES]
    expected += [("pipe.yaml", None, "special file"), ("folder.yaml", None, "directory"),
                 ("link.yaml", None, "symbolic link")]
    for name, field, fragment in expected:
        check_rejected(repo, run, name, field, fragment)
    for index in range(3):
        assert repo.done_doc(f"good-{index}")["status"] == "done"
    assert sorted(p.name for p in repo.inbox.iterdir()) == [".gitkeep"]


# ------------------------------------------------------------------ configuration
def test_a_config_typo_is_reported_with_file_and_line_by_the_real_cli(repo: Repo, conveyor_cli: ConveyorCli) -> None:
    repo.write_config("tools.yaml", repo.path.joinpath("config", "tools.yaml").read_text()
                      .replace("    parser: text\n", "    parser: text\n    env_alowlist: [PATH]\n", 1))
    done = conveyor_cli("config", "validate", cwd=repo.path)
    assert done.returncode == 2
    path = repo.path / "config" / "tools.yaml"
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "env_alowlist" in text)
    assert f"error: {path}:{line}: field 'tools.fake.env_alowlist': unknown key 'env_alowlist'" in done.stderr
    assert "did you mean 'env_allowlist'?" in done.stderr
    assert "Traceback" not in done.stderr
    refused = conveyor_cli("run", "--once", cwd=repo.path)          # the daemon will not start on it either
    assert refused.returncode == 2 and "env_alowlist" in refused.stderr
