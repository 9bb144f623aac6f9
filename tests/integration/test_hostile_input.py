"""Hostile input dropped into a running daemon (a real process, file events on): every bad file ends in
done/_rejected/ beside an .error.yaml naming its problem, every good one runs, and the daemon stays up."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conveyor.board.inbox import SETTLE_S, InboxReader
from conveyor.board.index import BoardIndex
from conveyor.board.layout import BoardLayout
from conveyor.core.errors import Problem
from tests.integration.conftest import Repo
from tests.integration.daemon_process import DaemonProcess, running_daemon
from tests.support.waiting import wait_for

CYRILLIC_A = "\u0430"          # looks exactly like the Latin "a"


@dataclass(frozen=True)
class Bad:
    name: str                  # file name in inbox/
    content: str | bytes
    fragment: str              # a fragment of one problem's message (or field) in the .error.yaml


def billion_laughs() -> str:
    lines = ["id: bomb", "agent: backend-dev", 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return "\n".join(lines) + "\ndescription: *a9\n"


def corpus() -> list[Bad]:
    """At least thirty kinds of bad task file, generated here (nothing checked in)."""
    ok = "agent: backend-dev\n"
    return [
        Bad("unclosed.yaml", "id: unclosed\n" + ok + "title: [unclosed\n", "not valid YAML"),
        Bad("tabs.yaml", "id: tabs\n" + ok + "description:\n\t- tab indented\n", "not valid YAML"),
        Bad("bad-indent.yaml", "id: bad-indent\n" + ok + "  title: x\n title: y\n", "not valid YAML"),
        Bad("list.yaml", "- id: list\n- agent: backend-dev\n", "not a mapping"),
        Bad("scalar.yaml", "just a sentence\n", "not a mapping"),
        Bad("empty.yaml", "", "is empty"),
        Bad("comments.yaml", "# id: comments\n# agent: backend-dev\n", "is empty"),
        Bad("two-docs.yaml", "id: two-docs\n" + ok + "---\nid: again\n", "not valid YAML"),
        Bad("no-id.yaml", ok + "title: x\n", "is missing"),
        Bad("no-agent.yaml", "id: no-agent\ntitle: x\n", "is missing"),
        Bad("mismatch.yaml", "id: other-name\n" + ok, "but the file is named 'mismatch.yaml'"),
        Bad("slash.yaml", "id: a/b\n" + ok, "not a safe id"),
        Bad("dotdot.yaml", "id: ..\n" + ok, "not a safe id"),
        Bad(".hidden-id.yml~", "id: x\n", ""),            # not a task name at all: ignored, stays (see below)
        Bad("dot-lead.yaml", "id: .dot-lead\n" + ok, "not a safe id"),
        Bad(f"b{CYRILLIC_A}d-id.yaml", f"id: b{CYRILLIC_A}d-id\n" + ok, "not a safe id"),
        Bad("spaced id.yaml", "id: spaced id\n" + ok, "not a safe id"),
        Bad("x" * 200 + ".yaml", "id: " + "x" * 200 + "\n" + ok, "not a safe id"),
        Bad("int-id.yaml", "id: 12\n" + ok, "but the file is named 'int-id.yaml'"),
        Bad("list-id.yaml", "id: [a, b]\n" + ok, "valid string"),
        Bad("agent-up.yaml", "id: agent-up\nagent: ../../etc\n", "not a safe agent name"),
        Bad("agent-dotdot.yaml", "id: agent-dotdot\nagent: ..\n", "not a safe agent name"),
        Bad("agent-abs.yaml", "id: agent-abs\nagent: /etc/passwd\n", "not a safe agent name"),
        Bad("agent-dot.yaml", "id: agent-dot\nagent: .hidden\n", "not a safe agent name"),
        Bad("agent-lookalike.yaml", f"id: agent-lookalike\nagent: b{CYRILLIC_A}ckend-dev\n",
            "not a safe agent name"),
        Bad("agent-nul.yaml", 'id: agent-nul\nagent: "back\\0end"\n', "not a safe agent name"),
        Bad("artefacts-map.yaml", "id: artefacts-map\n" + ok + "artefacts: {a: 1}\n", "valid list"),
        Bad("deps-string.yaml", "id: deps-string\n" + ok + "dependencies: other-task\n", "valid list"),
        Bad("deep.yaml", "id: deep\n" + ok + "context: " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
        Bad("deep-map.yaml", "id: deep-map\n" + ok + "x:" + "".join(f"\n{' ' * i}k:" for i in range(1, 200))
            + " 1\n", "nested deeper"),
        Bad("bomb.yaml", billion_laughs(), "alias bomb"),
        Bad("binary.yaml", b"id: binary\nagent: backend-dev\n\x00\x01\x02\xff", "NUL bytes"),
        Bad("latin1.yaml", "id: latin1\nagent: backend-dev\ntitle: caf\xe9\n".encode("latin-1"), "not valid UTF-8"),
        Bad("utf16.yaml", "id: utf16\nagent: backend-dev\n".encode("utf-16"), "NUL bytes"),
        Bad("huge.yaml", "id: huge\n" + ok + "description: |\n" + ("  " + "x" * 98 + "\n") * 100_000,
            "over the 1048576-byte limit"),
        Bad("python-tag.yaml", "id: python-tag\n" + ok + "title: !!python/object/apply:os.system ['touch pwned']\n",
            "not valid YAML"),
    ]


SECRETS = {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "GITHUB_TOKEN": "ghp_notreal",
           "CONVEYOR_TEST_PASSWORD": "hunter2"}


@pytest.fixture
def daemon(repo: Repo) -> Iterator[DaemonProcess]:
    with running_daemon(repo.path, SECRETS) as process:   # secrets in the daemon's environment
        process.wait_event("daemon.ready")
        yield process


def test_a_corpus_of_bad_files_is_rejected_one_by_one_while_good_ones_run(repo: Repo, daemon: DaemonProcess,
                                                                         tmp_path: Path) -> None:
    cases = corpus()
    rejected_cases = [case for case in cases if case.fragment]
    assert len(rejected_cases) >= 30
    for case in cases:
        repo.drop(case.name, case.content)
    os.mkfifo(repo.inbox / "fifo.yaml")
    (repo.inbox / "folder.yaml").mkdir()
    (tmp_path / "target.yaml").write_text("id: link\nagent: backend-dev\n")
    (repo.inbox / "link.yaml").symlink_to(tmp_path / "target.yaml")
    specials = {"fifo.yaml": "special file", "folder.yaml": "directory", "link.yaml": "symbolic link"}
    goods = ["good-1", "good-2"]
    for task_id in goods:
        repo.submit(task_id, description=f"FAKE write {task_id}.txt x")
    repo.drop("crlf.yaml", repo.task_text("crlf", description="FAKE write crlf.txt x").replace("\n", "\r\n"))
    repo.drop("bom.yaml", b"\xef\xbb\xbf" + repo.task_text("bom", description="FAKE write bom.txt x").encode())
    repo.drop("bom-crlf.yaml", b"\xef\xbb\xbf" + repo.task_text(
        "bom-crlf", description="FAKE write bom-crlf.txt x").replace("\n", "\r\n").encode())
    accepted = [*goods, "crlf", "bom", "bom-crlf"]
    expected = {case.name: case.fragment for case in rejected_cases} | specials
    wait_for(lambda: all(repo.done_path(i).exists() for i in accepted), timeout=90, what="the good tasks to run")
    wait_for(lambda: all((repo.rejected / f"{name}.error.yaml").exists() for name in expected), timeout=60,
             what="every bad file to be rejected")
    for name, fragment in expected.items():
        report = yaml.safe_load((repo.rejected / f"{name}.error.yaml").read_text())
        texts = [f"{p.get('field')} {p['message']}" for p in report["problems"]]
        assert any(fragment in text for text in texts), (name, texts)
        assert report["file"] == name and "what_to_do" in report
        assert os.path.lexists(repo.rejected / name)
    for task_id in accepted:
        document = repo.done_doc(task_id)
        assert document["status"] == "done" and document["result"]["artefacts"] == [f"{task_id}.txt"]
    assert (repo.inbox / ".hidden-id.yml~").exists()             # editor backups and dotfiles are ignored
    assert (tmp_path / "target.yaml").read_text() == "id: link\nagent: backend-dev\n"
    assert not list(repo.path.rglob("pwned")) and not (tmp_path / "pwned").exists()
    assert daemon.alive()
    assert [e for e in daemon.events() if e.get("level") == "critical" or "Traceback" in str(e)] == []


def test_a_file_renamed_into_inbox_while_still_being_written_runs_whole(repo: Repo, daemon: DaemonProcess) -> None:
    """The writer renames first and keeps writing after the daemon has looked; the first half alone is a
    valid task. It must run with the full content, never the first half. (However long the writer takes:
    `test_a_file_open_for_writing_is_never_judged_however_far_the_clock_runs` advances the clock.)"""
    staging = repo.path.parent / "staging"
    staging.mkdir(exist_ok=True)
    first = "id: half-written\nagent: backend-dev\ndescription: |\n  FAKE write first.txt one\n"
    rest = "  FAKE write second.txt two\nartefacts: [first.txt, second.txt]\n"
    with open(staging / "half-written.yaml", "w", encoding="utf-8") as handle:
        handle.write(first)
        handle.flush()
        os.rename(staging / "half-written.yaml", repo.inbox / "half-written.yaml")
        daemon.wait_event("task.still_being_written", lambda e: e["task_id"] == "half-written")
        handle.write(rest)
    wait_for(lambda: repo.done_path("half-written").exists(), what="the task to run")
    assert sorted(repo.done_doc("half-written")["result"]["artefacts"]) == ["first.txt", "second.txt"]


def test_a_half_written_file_that_is_invalid_so_far_is_not_rejected_early(repo: Repo, daemon: DaemonProcess) -> None:
    with open(repo.inbox / "slow-writer.yaml", "w", encoding="utf-8") as handle:   # in place, in inbox/
        handle.write("id: slow-writer\nagent: [back")
        handle.flush()
        daemon.wait_event("task.still_being_written", lambda e: e["task_id"] == "slow-writer")
        assert not (repo.rejected / "slow-writer.yaml").exists()
        handle.write("end-dev]\n")
    wait_for(lambda: (repo.rejected / "slow-writer.yaml.error.yaml").exists(), what="the finished file's verdict")
    report = yaml.safe_load((repo.rejected / "slow-writer.yaml.error.yaml").read_text())
    assert report["problems"][0]["field"] == "agent"                # judged on its full content: a list agent


class Reader:
    """The daemon's inbox reader over a real board, on a clock the test moves; rejections are collected."""

    def __init__(self, repo: Repo) -> None:
        layout = BoardLayout(repo.config().board_root)
        self.now = time.time()
        self.rejected: dict[str, list[Problem]] = {}
        self.reader = InboxReader(layout, BoardIndex(layout), lambda: self.now, lambda agent: True,
                                  lambda path, problems: self.rejected.__setitem__(path.name, problems))

    def read(self) -> list[str]:
        return [task.id for task in self.reader.read()]


def test_a_broken_file_is_rejected_only_once_the_clock_passes_the_settle_time(repo: Repo) -> None:
    """A closed file that does not parse may be a writer's first half: it settles for SETTLE_S by the
    daemon's clock (not the wall clock) before it is rejected."""
    path = repo.inbox / "fresh.yaml"
    path.write_text("id: fresh\nagent: [backend-dev]\n", encoding="utf-8")      # whole, or half of a file?
    reader = Reader(repo)
    written = path.stat().st_mtime
    for after in (0.0, SETTLE_S / 2, SETTLE_S - 0.1):
        reader.now = written + after
        assert reader.read() == [] and reader.rejected == {} and reader.reader.settling(), after
    reader.now = written + SETTLE_S + 0.1
    assert reader.read() == []
    assert [problem.field for problem in reader.rejected["fresh.yaml"]] == ["agent"]


def test_a_file_open_for_writing_is_never_judged_however_far_the_clock_runs(repo: Repo) -> None:
    reader = Reader(repo)
    with open(repo.inbox / "slow-writer.yaml", "w", encoding="utf-8") as handle:   # in place, in inbox/
        handle.write("id: slow-writer\nagent: [back")                             # broken so far
        handle.flush()
        for ahead in (0.0, SETTLE_S * 2, 3600.0):
            reader.now = time.time() + ahead
            assert reader.read() == [] and reader.rejected == {} and reader.reader.settling(), ahead
        handle.write("end-dev]\n")                                               # still broken, once whole
    assert reader.read() == []
    assert [problem.field for problem in reader.rejected["slow-writer.yaml"]] == ["agent"]


def test_the_same_file_dropped_twice_runs_once(repo: Repo, daemon: DaemonProcess) -> None:
    text = repo.task_text("twice", description="FAKE write twice.txt x")
    repo.drop("twice.yaml", text)
    repo.drop("twice.yaml", text)                               # again at once (replaces the first, or is late)
    wait_for(lambda: repo.done_path("twice").exists(), what="the task to run")
    first = repo.done_path("twice").read_bytes()
    repo.drop("twice.yaml", text)                               # again once it is done
    wait_for(lambda: (repo.rejected / "twice.yaml.error.yaml").exists(), what="the repeat to be rejected")
    report = yaml.safe_load((repo.rejected / "twice.yaml.error.yaml").read_text())
    assert "already on the board" in report["problems"][0]["message"]
    assert repo.done_path("twice").read_bytes() == first
    assert len(repo.rows("twice")) == 1
    assert daemon.alive()


def test_task_content_never_reaches_a_shell(repo: Repo, daemon: DaemonProcess, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = [f"$(touch {marker}-dollar)", f"`touch {marker}-tick`", f"; touch {marker}-semi",
               f"| touch {marker}-pipe", f"&& touch {marker}-and", f"\n touch {marker}-newline",
               f"$(IFS=_;cmd=touch_{marker}-ifs;$cmd)", "$(touch pwned-relative)"]
    for index, text in enumerate(hostile):
        repo.submit(f"shell-{index}", title=f"Fix {text}", description=f"{text}\nFAKE say {text}",
                    artefacts=[text], context={"notes": [text], "branch": "main"}, expect_changes=False)
    wait_for(lambda: all(repo.done_path(f"shell-{i}").exists() for i in range(len(hostile))), timeout=90,
             what="the tasks to run")
    for index, text in enumerate(hostile):
        document = repo.done_doc(f"shell-{index}")
        assert document["status"] == "done", document
        assert not document["result"].get("artefacts")        # nothing appeared in the worktree either
        assert text.strip() in repo.agent_prompt(f"shell-{index}")      # reached the agent as plain text
    assert list(tmp_path.glob("pwned*")) == [] and list(repo.path.rglob("pwned*")) == []
    assert daemon.alive()


def test_an_agent_sees_only_the_allowlisted_environment(repo: Repo, daemon: DaemonProcess) -> None:
    """The agent prints (records) its environment: none of the daemon's secrets, only the allowlist
    (PATH, HOME, LANG, FAKE_*) and the tool's own settings."""
    repo.submit("print-env", description="nothing", expect_changes=False)
    wait_for(lambda: repo.done_path("print-env").exists(), what="the task to run")
    seen = repo.agent.last("print-env")["env"]
    assert not set(SECRETS) & set(seen)
    assert not any(value in json.dumps(seen) for value in SECRETS.values())
    assert {name for name in seen if not name.startswith("FAKE_")} <= {"PATH", "HOME", "LANG"}
