"""Several real daemon processes, each in its own clone of one bare remote, serve one repository through
one real PostgreSQL server. People ask by pushing task files to the base branch's inbox/; the elected
leader moves them on the board branch (never the base branch); each task runs on exactly one node, which
pushes its task branch; a node killed mid-task loses its lease and another node finishes the task (without
spending an attempt); the leader fails over; and a frozen node that wakes up after its lease passed on
changes nothing: no push, no outcome, no board move."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import ConveyorCli, Repo
from tests.integration.fleet_support import LEASE_S, Fleet, fleet_yaml, pg_server, pg_url
from tests.integration.test_handoff import SCRIPT as HANDING_OFF
from tests.support.git_fleet import git
from tests.support.waiting import wait_for

__all__ = ["pg_server", "pg_url"]
pytestmark = pytest.mark.slow


@pytest.fixture
def fleet(repo: Repo, tmp_path: Path, pg_url: str) -> Iterator[Fleet]:
    with ExitStack() as stack:
        yield Fleet(repo, tmp_path, pg_url, stack)


def test_three_clones_share_the_board_branch_and_run_each_task_once(fleet: Fleet, conveyor_cli: ConveyorCli) -> None:
    for name in ("a", "b", "c"):
        fleet.start(name)
    base_before = fleet.base_head()
    ids = [f"share-{i}" for i in range(9)]
    fleet.ask([fleet.document(t, f"FAKE sleep 2\nFAKE write out/{t}.txt done") for t in ids])
    base_asked = fleet.base_head()
    wait_for(lambda: len(fleet.started()) >= 4, what="tasks running on the fleet", timeout=60)
    wait_for(lambda: any(p.startswith("assigned/backend-dev/") for p in fleet.board_files()), what="board moves",
             timeout=30)
    shown = conveyor_cli("status", "--format", "json", cwd=fleet.clone("a"))
    nodes = json.loads(shown.stdout)["fleet"]["nodes"]
    assert len(nodes) == 3 and all(n["alive"] and n["heartbeat_age_s"] < LEASE_S for n in nodes)
    assert sum(n["leader"] for n in nodes) == 1
    wait_for(lambda: fleet.all_done(ids), what="all tasks done on the board branch", timeout=90)
    assert fleet.started() == Counter({t: 1 for t in ids})                  # exactly once each
    for name in ("a", "b"):                 # any node shows the whole fleet's tasks, not its own clone's
        shown = json.loads(conveyor_cli("status", "--format", "json", cwd=fleet.clone(name)).stdout)
        assert shown["fleet"]["counts"] == {"queued": 0, "running": 0, "done": 9, "errors": 0}
    table = conveyor_cli("status", cwd=fleet.clone("c")).stdout
    assert "fleet (every node): queued 0 · running 0 · done 9 · errors 0" in table
    assert "this node's clone: " in table
    assert sum(1 for n in fleet.nodes if n.events("task.started")) >= 2      # on more than one node
    assert len(fleet.leaders()) == 1                                        # one board leader
    assert {task_id: state for task_id, (state, _f, _g) in fleet.rows().items()} == {t: "done" for t in ids}
    assert all(fleet.done_doc(t)["status"] == "done" for t in ids)
    assert all(fleet.branch_commits(t) == 1 for t in ids)                   # each node pushed its branch
    assert not [p for p in fleet.board_files() if p.startswith(("assigned/backend-dev/", "inbox/share-"))]
    assert fleet.base_head() == base_asked != base_before                  # Conveyor never pushed to main
    assert all(not n.events("fleet.board_pushed") for n in fleet.nodes if not n.events("fleet.leader"))


def test_a_hand_off_is_made_once_on_the_board_branch_and_runs_from_its_parents_branch(fleet: Fleet) -> None:
    """A node used to write the follow-up into its own clone's inbox/, which no node reads in a fleet: the
    hand-off was lost. The leader now writes it on the board branch in the commit that records its parent
    done, and the node that runs it fetches the parent's branch (pushed by whichever node ran the parent)."""
    for name in ("a", "b"):
        fleet.start(name)
    followup = "feature-followup-reviewer"
    fleet.submit("feature", HANDING_OFF)
    wait_for(lambda: fleet.all_done(["feature", followup]), what="the parent and its hand-off done", timeout=90)
    parent = fleet.done_doc("feature")
    assert parent["result"]["next_agent"] == "reviewer" and parent["result"]["handoff_task"] == followup
    follow = fleet.done_doc(followup, agent="reviewer")
    assert follow["status"] == "done", follow.get("error")
    assert follow["dependencies"] == ["feature"] and follow["context"]["branch"] == "conveyor/feature"
    assert "base_branch_note" not in follow["result"]
    assert git(fleet.remote, "show", f"conveyor/{followup}:src/feature.txt") == "built"   # started from the parent
    assert git(fleet.remote, "show", f"conveyor/{followup}:review.md") == "looks good"
    assert fleet.started() == Counter({"feature": 1, followup: 1})
    assert [p for p in fleet.board_files() if followup in p] == [f"done/reviewer/{followup}.yaml"]
    for name in ("a", "b"):                                   # no node made one of its own
        assert not list((fleet.clone(name) / "work/collaboration/inbox").glob("*followup*"))


def special_tool(fleet: Fleet, repo: Repo, tmp_path: Path, name: str = "special") -> dict[str, str]:
    """Agent `<name>-dev` runs a CLI found on PATH only where the returned env puts it (one machine has it)."""
    tools = yaml.safe_load((repo.path / "config" / "tools.yaml").read_text(encoding="utf-8"))
    tools["tools"][name] = {**tools["tools"]["fake"], "binary": f"conveyor-test-{name}-agent"}   # found on PATH
    agents = yaml.safe_load((repo.path / "config" / "agents.yaml").read_text(encoding="utf-8"))
    agents["agents"][f"{name}-dev"] = {"tool": name}
    repo.write_config("tools.yaml", yaml.safe_dump(tools))
    repo.write_config("agents.yaml", yaml.safe_dump(agents))
    fleet.publish_config(f"a tool only some machines have: {name}")
    has_it = tmp_path / f"{name}-bin"
    has_it.mkdir()
    (has_it / f"conveyor-test-{name}-agent").symlink_to(repo.agent_bin)
    return {"PATH": f"{has_it}{os.pathsep}{os.environ['PATH']}"}


def test_a_hand_off_on_another_node_starts_from_the_published_parent_not_a_stale_local_branch(
        fleet: Fleet, repo: Repo, tmp_path: Path) -> None:
    """The parent runs on a (only a has its CLI), its hand-off on b (only b has that one). b's clone holds
    an old `conveyor/feature` of its own (a run whose lease passed on, say): the hand-off starts from the
    published parent, not from that."""
    a_env, b_env = special_tool(fleet, repo, tmp_path, "only-a"), special_tool(fleet, repo, tmp_path, "only-b")
    stale = fleet.clone("b")
    git(stale, "checkout", "-q", "-b", "conveyor/feature")
    (stale / "src").mkdir(exist_ok=True)
    (stale / "src" / "feature.txt").write_text("stale\n", encoding="utf-8")
    git(stale, "add", "src/feature.txt")
    git(stale, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "an abandoned run")
    git(stale, "checkout", "-q", "main")
    fleet.start("a", env=a_env)
    fleet.start("b", env=b_env)
    script = HANDING_OFF.replace("NEXT_AGENT: reviewer", "NEXT_AGENT: only-b-dev")
    fleet.ask([fleet.document("feature", script, agent="only-a-dev")])
    followup = "feature-followup-only-b-dev"
    wait_for(lambda: fleet.all_done(["feature", followup]), what="the parent and its hand-off", timeout=90)
    assert fleet.done_doc(followup, agent="only-b-dev")["status"] == "done"
    assert git(fleet.remote, "show", f"conveyor/{followup}:src/feature.txt") == "built"   # not "stale"


def test_tasks_whose_cli_a_node_lacks_run_on_the_node_that_has_it(fleet: Fleet, repo: Repo, tmp_path: Path) -> None:
    """A fleet may mix machines. A node without an agent's CLI took its tasks and failed them ("not
    installed") although another node could run them; it now declines them (never granted them again)."""
    having_env = special_tool(fleet, repo, tmp_path)
    lacking, having = fleet.start("a"), fleet.start("b", env=having_env)
    ids = [f"rare-{n}" for n in range(4)]
    fleet.ask([fleet.document(t, f"FAKE write out/{t}.txt done", agent="special-dev") for t in ids])
    wait_for(lambda: fleet.all_done(ids), what="the node with the CLI to run them", timeout=90)
    assert all(fleet.done_doc(t, agent="special-dev")["status"] == "done" for t in ids)
    assert fleet.started() == Counter({t: 1 for t in ids})
    assert not lacking.events("task.started") and len(having.events("task.started")) == 4
    declined = [e["task_id"] for e in lacking.events("fleet.not_runnable_here")]
    assert len(declined) == len(set(declined))                   # a declined task is not granted to it again
    assert all("not installed" in e["reason"] for e in lacking.events("fleet.not_runnable_here"))


def test_a_task_no_node_can_run_fails_once_every_node_declined_it(fleet: Fleet, repo: Repo, tmp_path: Path) -> None:
    special_tool(fleet, repo, tmp_path)                          # and no node gets the PATH that has it
    nodes = [fleet.start("a"), fleet.start("c")]
    fleet.ask([fleet.document("nowhere", "FAKE write out/nowhere.txt done", agent="special-dev")])
    wait_for(lambda: fleet.all_done(["nowhere"]), what="the task to end", timeout=90)
    document = fleet.done_doc("nowhere", agent="special-dev")
    assert document["status"] == "error" and "not installed" in json.dumps(document["error"])
    assert sum(len(n.events("fleet.not_runnable_here")) for n in nodes) == 1   # the first declined, the last ran it
    assert sum(len(n.events("fleet.no_node_can_run")) for n in nodes) == 1


def test_a_bad_task_file_is_rejected_on_the_board_branch_with_its_report(fleet: Fleet, repo: Repo) -> None:
    fleet.start("a")
    (repo.path / "code.txt").write_text("pushed with the task: the node's clone must start from it\n")
    repo.git("add", "code.txt")                              # committed with the tasks below
    fleet.ask([fleet.document("fine", "FAKE write out/fine.txt done")], raw={"broken.yaml": "id: [unclosed\n"})
    wait_for(lambda: fleet.all_done(["fine"]), what="the good task done", timeout=60)
    assert git(fleet.remote, "rev-parse", "conveyor/fine~1") == fleet.base_head()   # started from the base as asked
    assert git(fleet.remote, "show", "conveyor/fine:code.txt").startswith("pushed with the task")
    wait_for(lambda: "_rejected/broken.yaml.error.yaml" in fleet.board_files(), what="the report", timeout=30)
    report = fleet.board_doc("_rejected/broken.yaml.error.yaml")
    assert report["file"] == "broken.yaml" and report["problems"][0]["file"] == "broken.yaml"
    assert "inbox/broken.yaml" in report["what_to_do"]
    head = fleet.board_head()
    time.sleep(2)                                            # several passes: the same version is not rejected again
    assert fleet.board_head() == head
    assert fleet.rows().keys() == {"fine"}


def test_a_node_killed_mid_task_loses_it_to_another_and_the_leader_fails_over(fleet: Fleet) -> None:
    for name in ("a", "b", "c"):
        fleet.start(name)
    fleet.submit("victim", "FAKE sleep 3\nFAKE write out/victim.txt done")
    runner = fleet.runner_of("victim")
    runner.kill_group()                                    # SIGKILL mid-run: no goodbye, the lease just stops
    wait_for(lambda: fleet.all_done(["victim"]), what="another node to finish it", timeout=60)
    finisher = next(n for n in fleet.nodes if n is not runner and n.events("task.started"))
    assert [e["takeover"] for e in finisher.events("fleet.granted") if e["task_id"] == "victim"] == [True]
    assert fleet.started()["victim"] == 2                  # the killed run, and the one that finished
    assert fleet.rows()["victim"] == ("done", 2, 2)        # granted twice, fence 2 wrote the result
    document = fleet.done_doc("victim")
    assert (document["status"], document["attempt"]) == ("done", 1)   # the crash was not the task's attempt
    assert fleet.branch_commits("victim") == 1
    # now the board leader dies too (it may have been the runner): another node leads and takes new work
    for leader in fleet.leaders():
        leader.kill_group()
    survivors = [n for n in fleet.nodes if n.alive()]
    wait_for(lambda: any(n.events("fleet.leader") for n in survivors), what="a new leader", timeout=30)
    fleet.submit("after", "FAKE write out/after.txt done")
    wait_for(lambda: fleet.all_done(["after"]), what="the new leader's intake", timeout=60)
    assert fleet.started()["after"] == 1


def test_a_frozen_node_that_wakes_after_its_lease_passed_on_changes_nothing(fleet: Fleet, repo: Repo) -> None:
    for name in ("a", "b"):
        fleet.start(name)
    fleet.submit("frozen", "FAKE sleep 2\nFAKE write out/frozen.txt done")
    sleeper = fleet.runner_of("frozen")
    wait_for(lambda: (repo.out / "frozen.prompt").exists(), what="its agent to start")   # mid-run, not mid-git
    sleeper.signal(signal.SIGSTOP)                         # a long GC pause, a VM suspended, a stalled disk
    try:
        try:
            wait_for(lambda: fleet.all_done(["frozen"]), what="the other node to finish it", timeout=60)
        except AssertionError:
            raise AssertionError(fleet.logs()) from None
        board_head = fleet.board_head()
        branch_head = fleet.branch_head("frozen")
        finished = fleet.done_doc("frozen")
    finally:
        sleeper.signal(signal.SIGCONT)
    refused = sleeper.wait_event("fleet.fenced", lambda e: e.get("task_id") == "frozen", timeout=30)
    assert refused["node"]
    time.sleep(2.0)                                        # give a wrong write the time to happen
    assert fleet.branch_head("frozen") == branch_head      # its task branch was not pushed over
    assert fleet.done_doc("frozen") == finished            # its outcome never reached the board
    assert finished["status"] == "done", finished.get("error")
    assert fleet.branch_commits("frozen") == 1
    assert fleet.rows()["frozen"] == ("done", 2, 2)
    assert not sleeper.events("publish.pushed")            # nothing pushed by the late writer
    assert fleet.board_head() == board_head or "done/backend-dev/frozen.yaml" in fleet.board_files()
    assert not list((fleet.clone(fleet.names[sleeper.pid]) / "work/collaboration/assigned").rglob("*.yaml"))
    assert sleeper.alive()                                 # and it keeps serving


ROADMAP = """\
# Roadmap

### 🔴 **PRIORITY 1: First thing**

**Status**: 📝 Planned
**Agent**: backend-dev

FAKE write out/one.txt one

### 🟡 **PRIORITY 2: Second thing**

**Status**: 📝 Planned
**Agent**: backend-dev

FAKE write out/two.txt two
"""


def test_roadmap_items_on_the_base_branch_run_and_their_status_lines_land_on_the_board_branch(
        repo: Repo, tmp_path: Path, pg_url: str) -> None:
    text = fleet_yaml(pg_url).replace("roadmap: {enabled: false}", "roadmap: {enabled: true, max_in_flight: 1}")
    with ExitStack() as stack:
        fleet = Fleet(repo, tmp_path, pg_url, stack, daemon_yaml=text)
        (repo.path / "ROADMAP.md").write_text(ROADMAP, encoding="utf-8")
        repo.git("add", "ROADMAP.md")
        repo.git("commit", "-q", "-m", "plan two items")
        repo.git("push", "-q", "origin", "main")
        base = fleet.base_head()
        fleet.start("a")
        ids = ["roadmap-1-first-thing", "roadmap-2-second-thing"]
        wait_for(lambda: fleet.all_done(ids), what="both items' tasks done", timeout=90)

        def board_roadmap() -> str:
            return git(fleet.remote, "show", "conveyor/board:ROADMAP.md")

        wait_for(lambda: board_roadmap().count("In Review (branch conveyor/roadmap-") == 2,
                 what="both status lines", timeout=30)
        started = [e["task_id"] for e in fleet.nodes[0].events("task.started")]
        assert started == ids                                # max_in_flight 1: one after the other
        assert fleet.done_doc(ids[0])["roadmap_item"]["number"] == "1"
        assert git(fleet.remote, "show", "main:ROADMAP.md") == ROADMAP.rstrip("\n")   # the base is untouched
        assert fleet.base_head() == base
        assert "Planned" not in board_roadmap() and board_roadmap().startswith("# Roadmap")


def test_a_task_waits_on_the_board_until_its_dependency_is_done(fleet: Fleet) -> None:
    """As on a single host: asked together, the dependent task is not offered to the fleet (it stays in the
    base branch's inbox/) until the board branch shows its dependency done; then it runs, once."""
    for name in ("a", "b"):
        fleet.start(name)
    fleet.ask([fleet.document("dep-first", "FAKE sleep 2\nFAKE write out/first.txt done"),
               fleet.document("dep-second", "FAKE write out/second.txt done", dependencies=["dep-first"])])
    wait_for(lambda: fleet.all_done(["dep-first", "dep-second"]), what="both tasks done", timeout=90)
    assert fleet.started() == Counter({"dep-first": 1, "dep-second": 1})
    committed = [e for n in fleet.nodes for e in n.events("task.committed") if e["task_id"] == "dep-first"]
    started = [e for n in fleet.nodes for e in n.events("task.started") if e["task_id"] == "dep-second"]
    assert committed and started and started[0]["timestamp"] > committed[0]["timestamp"]
