"""The process supervisor against real children: streaming, caps, timeouts, process trees, stdin, env."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from structlog.testing import capture_logs

from conveyor.config.argv import render_argv
from conveyor.runner.env import build_env
from conveyor.runner.process import (
    STDERR_PREFIX,
    CommandFailed,
    SpawnError,
    run_command,
    run_process,
)
from conveyor.runner.types import ProcessResult, ProcessSpec
from tests.integration.helpers import helper_argv, install

MARKER = b"[conveyor: log truncated after "
CHILD_ENV = {"LC_ALL": "C.UTF-8"}  # keeps Python from coercing the locale into its own environment


def spec_for(tmp_path: Path, argv: list[str], **overrides: object) -> ProcessSpec:
    fields: dict[str, object] = {"argv": argv, "cwd": tmp_path, "env": dict(CHILD_ENV),
                                 "log_path": tmp_path / "logs" / "run.log", "timeout_s": 30.0,
                                 "idle_timeout_s": 30.0, "kill_grace_s": 0.5}
    fields.update(overrides)
    return ProcessSpec(**fields)  # type: ignore[arg-type]


def run(spec: ProcessSpec, **kwargs: object) -> tuple[ProcessResult, list[str]]:
    lines: list[str] = []
    result = run_process(spec, on_line=lines.append, **kwargs)  # type: ignore[arg-type]
    return result, lines


def running(pid: int) -> bool:
    """True when the pid is a live process (a zombie has finished running: it only awaits reaping)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def tree_pids(tmp_path: Path) -> Iterator[Path]:
    """Where tree.py writes its grandchildren's pids; any still running at teardown are killed."""
    pidfile = tmp_path / "tree.pids"
    yield pidfile
    if pidfile.exists():
        for pid in map(int, pidfile.read_text().split()):
            if running(pid):
                os.kill(pid, signal.SIGKILL)


def grandchildren(pidfile: Path) -> list[int]:
    pids = [int(pid) for pid in pidfile.read_text().split()]
    assert len(pids) == 2
    return pids


# ------------------------------------------------------------------ output


def test_stdout_and_stderr_reach_the_log_and_lines(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, helper_argv("exit_with.py", "0"))
    result, lines = run(spec)
    assert result.exit_code == 0 and result.signal is None
    assert lines == []  # exit_with prints only on stderr: on_line sees stdout only
    assert spec.log_path.read_bytes() == STDERR_PREFIX + b"bye\n"
    assert result.stderr_tail == "bye\n"
    assert result.output_bytes == 4


def test_lines_in_order_and_stream_marked(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, helper_argv("emit.py", "300", "--line", "100"))
    result, lines = run(spec)
    assert lines == ["x" * 99] * 3
    assert spec.log_path.read_bytes() == (b"x" * 99 + b"\n") * 3
    assert result.output_bytes == 300 and not result.log_truncated


def test_interleaved_streams_keep_one_stream_per_log_line(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, helper_argv("interleave.py"))
    result, lines = run(spec)
    assert spec.log_path.read_bytes() == b"abc\n[stderr] e1\n[stderr] e2\ndef\n[stderr]  tail\n"
    assert lines == ["abcdef"]  # the parser sees stdout as the child wrote it
    assert result.stderr_tail == "e1\ne2 tail\n"


def test_fifty_megabytes_leave_a_capped_log(tmp_path: Path) -> None:
    cap = 1 << 20
    total = 50 * (1 << 20)
    spec = spec_for(tmp_path, helper_argv("emit.py", str(total), "--line", "1000"), log_cap_bytes=cap)
    result = run_process(spec)
    data = spec.log_path.read_bytes()
    marker_line = f"[conveyor: log truncated after {cap} bytes]\n".encode()
    assert data.endswith(marker_line)
    assert len(data) <= cap + len(marker_line) + 1
    assert data[:cap] == (b"x" * 999 + b"\n") * (cap // 1000) + b"x" * (cap % 1000)
    assert result.log_truncated and result.output_bytes == total and result.exit_code == 0


def test_stderr_after_the_cap_is_counted_not_logged(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, helper_argv("emit.py", "5000", "--stderr", "--end", "THE END"),
                    log_cap_bytes=100)
    result = run_process(spec)
    data = spec.log_path.read_bytes()
    assert data.startswith(STDERR_PREFIX) and data.count(MARKER) == 1
    assert result.output_bytes == 5000 + len("THE END")
    assert result.stderr_tail.endswith("THE END") and len(result.stderr_tail) == 4096


def test_long_line_is_cut_and_invalid_utf8_replaced(tmp_path: Path) -> None:
    payload = b"first\n" + b"y" * (3 << 20) + b"\n" + b"caf\xc3\xa9 \xff\n\nlast without newline"
    spec = spec_for(tmp_path, helper_argv("echo_stdin.py", "--copy"), stdin_data=payload,
                    max_line_bytes=1 << 20)
    result, lines = run(spec)
    assert result.exit_code == 0
    assert lines == ["first", "y" * (1 << 20), "café \ufffd", "", "last without newline"]
    assert spec.log_path.read_bytes() == payload  # the log keeps the whole line; only on_line is cut


@pytest.mark.slow
@pytest.mark.parametrize("line", ["65536", "0"], ids=["64KiB-lines", "one-endless-line"])
def test_a_gigabyte_of_output_keeps_memory_flat(tmp_path: Path, line: str) -> None:
    me = psutil.Process()
    before = me.memory_info().rss
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.005):
            peak = max(peak, me.memory_info().rss)

    sampler = threading.Thread(target=sample)
    sampler.start()
    total = 1 << 30
    lines: list[int] = []
    spec = spec_for(tmp_path, helper_argv("emit.py", str(total), "--line", line),
                    max_line_bytes=1 << 20, timeout_s=600, idle_timeout_s=60)
    try:
        result = run_process(spec, on_line=lambda text: lines.append(len(text)))
    finally:
        done.set()
        sampler.join()
    assert result.exit_code == 0 and result.output_bytes == total and result.log_truncated
    assert len(lines) == (total // 65536 if line != "0" else 1)
    assert max(lines) <= 1 << 20
    assert peak - before < 64 * (1 << 20), f"RSS grew by {(peak - before) >> 20} MiB"


def test_exit_code_and_signal_are_reported(tmp_path: Path) -> None:
    assert run_process(spec_for(tmp_path, helper_argv("exit_with.py", "3"))).exit_code == 3
    killed = run_process(spec_for(tmp_path, helper_argv("exit_with.py", "KILL")))
    assert killed.exit_code is None and killed.signal == signal.SIGKILL
    assert not (killed.timed_out or killed.idle_timed_out or killed.stopped)


def test_on_start_gets_the_pid(tmp_path: Path) -> None:
    seen: list[int] = []
    result = run_process(spec_for(tmp_path, helper_argv("exit_with.py", "0")), on_start=seen.append)
    assert seen == [result.pid] and result.pid is not None


# ------------------------------------------------------------------ timeouts and process trees


def test_wall_timeout_kills_the_whole_tree(tmp_path: Path, tree_pids: Path) -> None:
    spec = spec_for(tmp_path, helper_argv("tree.py", str(tree_pids), "--then", "chatter"),
                    timeout_s=1.0, idle_timeout_s=30.0)
    with capture_logs() as logs:
        result, lines = run(spec)
    assert result.timed_out and not result.idle_timed_out and not result.stopped
    assert result.signal == signal.SIGTERM and result.exit_code is None
    assert lines[:2] == ["started", "working"]
    assert not any(running(pid) for pid in grandchildren(tree_pids))
    events = [entry["event"] for entry in logs]
    assert "process_group_killed" in events  # one grandchild ignores SIGTERM: SIGKILL was needed


def test_idle_timeout_kills_a_silent_tree(tmp_path: Path, tree_pids: Path) -> None:
    spec = spec_for(tmp_path, helper_argv("tree.py", str(tree_pids), "--then", "hang"),
                    timeout_s=30.0, idle_timeout_s=0.5)
    result, lines = run(spec)
    assert result.idle_timed_out and not result.timed_out
    assert result.signal == signal.SIGTERM
    assert lines == ["started"]
    assert not any(running(pid) for pid in grandchildren(tree_pids))


def test_sigterm_ignored_by_the_child_itself_ends_in_sigkill(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, helper_argv("hang.py", "ready", "--ignore-term"), idle_timeout_s=0.3,
                    kill_grace_s=0.3)
    result = run_process(spec)
    assert result.idle_timed_out and result.signal == signal.SIGKILL
    assert result.pid is not None and not running(result.pid)


@pytest.mark.parametrize("quiet", [False, True], ids=["holding-pipes", "detached-output"])
def test_child_that_forks_and_exits_leaves_nothing_behind(tmp_path: Path, tree_pids: Path,
                                                          quiet: bool) -> None:
    argv = helper_argv("tree.py", str(tree_pids), "--then", "exit", *(["--quiet-children"] if quiet else []))
    with capture_logs() as logs:
        result, lines = run(spec_for(tmp_path, argv))
    assert result.exit_code == 0
    assert not (result.timed_out or result.idle_timed_out or result.stopped)
    assert lines == ["started"]
    assert not any(running(pid) for pid in grandchildren(tree_pids))
    assert "process_group_survivors" in [entry["event"] for entry in logs]


def test_grandchildren_that_leave_the_group_do_not_hang_the_reader(tmp_path: Path, tree_pids: Path) -> None:
    """Processes in another session cannot be found by group; reading stops once our group is gone."""
    result, lines = run(spec_for(tmp_path, helper_argv("tree.py", str(tree_pids), "--escape")))
    assert result.exit_code == 0 and lines == ["started"]
    assert all(running(pid) for pid in grandchildren(tree_pids))  # outside our reach; the fixture kills them


def test_stop_event_stops_the_child(tmp_path: Path) -> None:
    stop = threading.Event()

    def on_line(line: str) -> None:
        if line == "ready":
            stop.set()

    result = run_process(spec_for(tmp_path, helper_argv("hang.py", "ready")), on_line=on_line, stop=stop)
    assert result.stopped and not result.timed_out and not result.idle_timed_out
    assert result.signal == signal.SIGTERM


@pytest.mark.parametrize("which", ["on_line", "on_start"])
def test_a_failing_callback_kills_the_child_and_propagates(tmp_path: Path, tree_pids: Path,
                                                           which: str) -> None:
    started: list[int] = []

    def line_fails(_line: str) -> None:
        raise RuntimeError("parser bug")

    def start_fails(pid: int) -> None:
        started.append(pid)
        raise RuntimeError("parser bug")

    callbacks: dict[str, object] = ({"on_start": started.append, "on_line": line_fails} if which == "on_line"
                                    else {"on_start": start_fails})
    spec = spec_for(tmp_path, helper_argv("tree.py", str(tree_pids), "--then", "hang"))
    with pytest.raises(RuntimeError, match="parser bug"):
        run_process(spec, **callbacks)  # type: ignore[arg-type]
    assert not running(started[0])
    if tree_pids.exists():  # on_start fails before tree.py has forked, or after: either way nothing runs
        assert not any(running(pid) for pid in grandchildren(tree_pids))


# ------------------------------------------------------------------ stdin


def test_stdin_is_dev_null_by_default(tmp_path: Path) -> None:
    result, lines = run(spec_for(tmp_path, helper_argv("echo_stdin.py")))
    assert result.exit_code == 0
    assert json.loads(lines[0]) == {"bytes": 0, "sha256": hashlib.sha256().hexdigest(), "devnull": True}


def test_large_stdin_data_arrives_whole(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    result, lines = run(spec_for(tmp_path, helper_argv("echo_stdin.py"), stdin_data=data))
    assert result.exit_code == 0
    report = json.loads(lines[0])
    assert report == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "devnull": False}


def test_stdin_echoed_back_does_not_deadlock(tmp_path: Path) -> None:
    data = (b"z" * 1023 + b"\n") * 5 * 1024  # 5 MiB: far beyond both pipe buffers
    spec = spec_for(tmp_path, helper_argv("echo_stdin.py", "--copy"), stdin_data=data)
    result, lines = run(spec)
    assert result.exit_code == 0 and result.output_bytes == len(data)
    assert len(lines) == 5 * 1024 and spec.log_path.read_bytes() == data


def test_child_that_ignores_stdin_data_is_fine(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, helper_argv("echo_stdin.py", "--ignore"), stdin_data=b"q" * (4 << 20))
    assert run_process(spec).exit_code == 0


def test_empty_stdin_data_is_an_immediate_eof(tmp_path: Path) -> None:
    result, lines = run(spec_for(tmp_path, helper_argv("echo_stdin.py"), stdin_data=b""))
    assert result.exit_code == 0
    assert json.loads(lines[0])["bytes"] == 0 and json.loads(lines[0])["devnull"] is False


# ------------------------------------------------------------------ environment and arguments


def test_environment_is_exactly_what_was_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_LEAK_CANARY", "must not reach the child")
    env = {**CHILD_ENV, "SPACES": "a b  c", "NEWLINE": "x\ny", "EQUALS": "a=b=c", "UNICODE": "é✓", "EMPTY": ""}
    result, lines = run(spec_for(tmp_path, helper_argv("echo_env.py"), env=env))
    assert result.exit_code == 0
    assert json.loads(lines[0]) == env


def test_service_manager_variables_never_reach_the_child(tmp_path: Path) -> None:
    source = {**CHILD_ENV, "NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000",
              "ANTHROPIC_API_KEY": "sk-test"}
    env = build_env(source, ["*"], {"LISTEN_FDS": "3"})
    _, lines = run(spec_for(tmp_path, helper_argv("echo_env.py"), env=env))
    assert json.loads(lines[0]) == {**CHILD_ENV, "ANTHROPIC_API_KEY": "sk-test"}


def test_hostile_argument_values_arrive_verbatim_and_nothing_runs(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    hostile = {"prompt": "; rm -rf victim", "model": "$(touch pwned)", "workdir": "`touch pwned2` && x",
               "extra": "a b\n--flag 'q\" \\ {model} %s"}
    template = ["{prompt}", ["--model", "{model}"], "--cwd={workdir}", "{extra}", ["--absent", "{nope}"]]
    argv = helper_argv("echo_argv.py", *render_argv(template, hostile))
    result, lines = run(spec_for(tmp_path, argv))
    assert result.exit_code == 0
    assert json.loads(lines[0]) == ["; rm -rf victim", "--model", "$(touch pwned)",
                                    "--cwd=`touch pwned2` && x", "a b\n--flag 'q\" \\ {model} %s"]
    assert victim.is_dir()
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


# ------------------------------------------------------------------ failures to start


def test_missing_executable_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "bin" / "no-such-agent"
    with pytest.raises(SpawnError, match=re.escape(f"cannot start {missing}: there is no such file")):
        run_process(spec_for(tmp_path, [str(missing), "-p", "hi"]))


def test_non_executable_file_names_the_path(tmp_path: Path) -> None:
    script = install("exit_with.py", tmp_path / "bin", executable=False)
    with pytest.raises(SpawnError, match=re.escape(f"cannot start {script}: it is not executable")):
        run_process(spec_for(tmp_path, [str(script), "0"]))


def test_installed_helper_runs_by_its_own_shebang(tmp_path: Path) -> None:
    script = install("echo_argv.py", tmp_path / "bin", as_name="fake-agent")
    _, lines = run(spec_for(tmp_path, [str(script), "-p", "hello"]))
    assert json.loads(lines[0]) == ["-p", "hello"]


def test_missing_working_directory_is_named(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, helper_argv("exit_with.py", "0"), cwd=tmp_path / "gone")
    with pytest.raises(SpawnError, match=re.escape(f"the working directory {tmp_path / 'gone'} is not usable")):
        run_process(spec)


def test_unusable_log_path_is_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    spec = spec_for(tmp_path, helper_argv("exit_with.py", "0"), log_path=tmp_path / "file" / "run.log")
    with pytest.raises(SpawnError, match="cannot open the log file"):
        run_process(spec)


def test_nul_byte_in_an_argument_is_a_spawn_error(tmp_path: Path) -> None:
    with pytest.raises(SpawnError, match="NUL byte"):
        run_process(spec_for(tmp_path, helper_argv("echo_argv.py", "a\x00b")))


def test_empty_argv_is_a_spawn_error(tmp_path: Path) -> None:
    with pytest.raises(SpawnError, match="empty"):
        run_process(spec_for(tmp_path, []))


# ------------------------------------------------------------------ run_command (verify commands)


def test_run_command_success(tmp_path: Path) -> None:
    result = run_command(helper_argv("sleep_print.py", "0", "ok"), cwd=tmp_path, env=CHILD_ENV,
                         log_path=tmp_path / "verify.log", timeout_s=30)
    assert result.exit_code == 0 and (tmp_path / "verify.log").read_text() == "ok\n"


def test_bare_program_name_is_found_on_the_given_path_only(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    install("echo_argv.py", bin_dir, as_name="fake-verify")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(SpawnError, match="cannot start fake-verify: there is no such file"):
        run_command(["fake-verify"], cwd=tmp_path, env=CHILD_ENV, log_path=tmp_path / "v.log", timeout_s=30)
    result = run_command(["fake-verify", "ok"], cwd=tmp_path, env={**CHILD_ENV, "PATH": str(bin_dir)},
                         log_path=tmp_path / "v.log", timeout_s=30)
    assert result.exit_code == 0 and (tmp_path / "v.log").read_text() == '["ok"]\n'


def test_run_command_failure_reads_well(tmp_path: Path) -> None:
    argv = helper_argv("exit_with.py", "2")
    with pytest.raises(CommandFailed) as caught:
        run_command(argv, cwd=tmp_path, env=CHILD_ENV, log_path=tmp_path / "verify.log", timeout_s=30)
    message = str(caught.value)
    assert message.splitlines()[0] == f"command failed: {sys.executable} {argv[1]} 2"
    assert "exit code 2" in message and "    [stderr] bye" in message and "verify.log" in message
    assert caught.value.result.exit_code == 2


def test_run_command_timeout_is_a_failure(tmp_path: Path) -> None:
    with pytest.raises(CommandFailed, match="killed by SIGTERM after the wall-clock timeout"):
        run_command(helper_argv("hang.py"), cwd=tmp_path, env=CHILD_ENV, log_path=tmp_path / "v.log",
                    timeout_s=0.3)


def test_run_command_without_check_returns_the_result(tmp_path: Path) -> None:
    result = run_command(helper_argv("exit_with.py", "1"), cwd=tmp_path, env=CHILD_ENV,
                         log_path=tmp_path / "v.log", timeout_s=30, check=False)
    assert result.exit_code == 1
