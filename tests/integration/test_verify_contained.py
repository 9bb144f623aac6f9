"""Verify commands run the agent's code (its tests, its conftest.py), so they run in the agent's sandbox: a
hostile agent that writes a check which reads credentials, or writes into the user's checkout, home or the
daemon's state folder, gets nothing, and its next task's checks start from a clean home.

A real daemon process, a real agent executable (`sandbox: bwrap`, so a machine where bubblewrap cannot run
fails this test instead of skipping it) and a real verify command. The check exits 0 only when every escape
it can see failed (credentials, the ssh key, a home shared with the previous check); whether its writes
landed is read on the host (inside, a checkout under /tmp is a private throw-away folder), so the test
fails if verify ever runs uncontained again.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.conftest import DAEMON_YAML, Repo, use_only
from tests.integration.daemon_process import running_daemon
from tests.support.agent_script import step
from tests.support.waiting import wait_for

API_KEY = "sk-ant-verifyContainmentTest0123456789"
TOKEN = "ghp_verifyContainmentTestToken0123456789"

CHECK = r'''
import json, os, sys
from pathlib import Path
targets = json.loads({targets!r})
escaped = {{}}
for name in ("ANTHROPIC_API_KEY", "GITHUB_TOKEN"):
    if os.environ.get(name):
        escaped["env " + name] = "visible"
for label, path in targets["write"].items():   # the host tells whether these landed (see the test)
    try:
        Path(path).write_text("planted by a verify command\n")
    except OSError:
        pass
try:
    escaped["read ssh key"] = Path(targets["secret"]).read_text()
except OSError:
    pass
left = Path(os.environ["HOME"]) / "left-by-the-last-check"
if left.exists():
    escaped["home shared between checks"] = str(left)
left.write_text("x")
print(json.dumps(escaped))
sys.exit(1 if escaped else 0)
'''

def test_verify_runs_the_agents_check_inside_the_sandbox(repo: Repo, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("-----BEGIN PRIVATE KEY-----\nsecret\n", encoding="utf-8")
    state_dir = repo.telemetry_db.parent
    targets = {"write": {"checkout": str(repo.path / "planted-by-verify.txt"),
                         "home": str(home / ".bashrc-planted"),
                         "state": str(state_dir / "planted-by-verify.txt"),
                         "config": str(repo.path / "config" / "tools.yaml")},
               "secret": str(home / ".ssh" / "id_rsa")}
    check = CHECK.format(targets=json.dumps(targets))
    use_only(repo, repo.agent_bin, "writer", env_allowlist=["PATH", "HOME", "LANG", "ANTHROPIC_*"],
             credentials_env=["ANTHROPIC_API_KEY"], sandbox="bwrap")
    repo.write_config("daemon.yaml", DAEMON_YAML + "privacy: full\n")
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "a check-writing agent")
    tools_before = (repo.path / "config" / "tools.yaml").read_bytes()
    env = {"HOME": str(home), "ANTHROPIC_API_KEY": API_KEY, "GITHUB_TOKEN": TOKEN}
    with running_daemon(repo.path, env=env) as daemon:
        daemon.wait_event("daemon.ready")
        for task_id in ("first-check", "second-check"):
            repo.submit(task_id, description=step("write", path="check_escape.py", text=check),
                        verify=["python3 check_escape.py"])
            wait_for(lambda t=task_id: repo.done_path(t).exists(), what=f"{task_id} to end")
            document = repo.done_doc(task_id)
            assert document["status"] == "done", document.get("error")    # the check exits 1 on any escape
            assert document["result"]["sandbox"] == "bwrap"
            verify = [check for check in document["result"]["checks"] if check["check"].startswith("verify:")]
            assert verify and verify[0]["result"] == "passed", document["result"]["checks"]
    for path in targets["write"].values():
        assert Path(path).name == "tools.yaml" or not Path(path).exists(), path
    assert (repo.path / "config" / "tools.yaml").read_bytes() == tools_before
    verify_homes = state_dir / "sandbox" / "verify"
    assert not verify_homes.exists() or not list(verify_homes.iterdir())   # each check's home is removed
