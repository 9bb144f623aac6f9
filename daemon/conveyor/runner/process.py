"""Start and supervise one child: the only way Conveyor runs an agent CLI or a verify command.

Why one wrapper: agents hang silently, leave helpers running after they exit, and print without limit. So
every child gets an argv (never a shell), its own session and process group, stdin from /dev/null unless
data is given, exactly the environment it was handed, a size-capped log and two timeouts (wall clock and
no output). To stop it, the whole group gets SIGTERM, `kill_grace_s` to exit, then SIGKILL; the same happens
to whatever is left in the group after the child itself exits.

Why `selectors` on the caller's thread rather than reader threads: one loop multiplexes stdout, stderr and
the stdin feed, so a large stdin never deadlocks against a full stdout pipe; a timeout is just the select
timeout; callbacks run on the caller's thread; and if the caller's callback raises, the group is killed
before the exception leaves (epoll on Linux, kqueue on macOS). A `threading.Event` cannot be selected on,
so the loop wakes at least every `_TICK_S` to look at it and at the child.

Log format: stdout bytes are copied unchanged; every stderr line starts with `[stderr] `; when one stream
interrupts the other's unfinished line a newline is inserted first, so each log line belongs to one stream.
At `log_cap_bytes` the log gets one `[conveyor: log truncated after N bytes]` line and nothing more, while
the pipes are still drained and counted. The log is rewritten from empty on each run: give each
invocation its own path. `on_line` gets stdout lines only; the last line is delivered even without a
trailing newline.

Limit: a descendant that calls setsid() has left the group and cannot be found; once our group is gone
we stop reading even if such a process still holds the pipes, and leave it alone.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol

import structlog

from conveyor.core.errors import ConveyorError
from conveyor.core.private import open_private, private_dir
from conveyor.runner.types import ProcessResult, ProcessSpec

log = structlog.get_logger()

READ_CHUNK = 64 * 1024
WRITE_CHUNK = 64 * 1024
STDERR_TAIL_BYTES = 4 * 1024
STDERR_PREFIX = b"[stderr] "
_TICK_S = 0.1          # longest wait between looks at the stop event and the child
_SLICE_S = 0.05        # how often a terminating group is checked while its pipes are drained
_AFTER_KILL_S = 1.0    # after SIGKILL, how long to wait for the group to disappear
_FINAL_DRAIN_S = 0.5   # after the group is gone, at most this long to read what is left in the pipes

Clock = Callable[[], float]


class Stop(Protocol):
    """What tells a run to stop: a `threading.Event`, or anything else that answers `is_set`."""

    def is_set(self) -> bool: ...


class SpawnError(ConveyorError):
    """The child could not be started; the message names the path and the reason."""


class CommandFailed(ConveyorError):
    """A command failed or was stopped; the message holds the command, how it ended and its output tail."""

    def __init__(self, argv: Sequence[str], result: ProcessResult, output_tail: str, log_path: Path) -> None:
        self.argv = list(argv)
        self.result = result
        self.output_tail = output_tail
        self.log_path = log_path
        body = "\n".join("    " + line for line in output_tail.splitlines()) or "    (no output)"
        super().__init__(f"command failed: {shlex.join(self.argv)}\n  {ended_how(result)}\n"
                         f"  output (tail; full log: {log_path}):\n{body}")


class _Log:
    """The capped log file; a stderr line carries a prefix so every log line names its stream."""

    def __init__(self, file: BinaryIO, cap: int) -> None:
        self._file = file
        self._cap = cap
        self.written = 0
        self.truncated = False
        self._open_line: str | None = None  # the stream whose line the log is in the middle of
        self._ends_newline = True

    def add(self, data: bytes, stream: str) -> None:
        if self.truncated:
            return
        out = bytearray()
        if self._open_line not in (None, stream):
            out += b"\n"
        if stream == "err":
            self._add_prefixed(out, data, at_line_start=self._open_line != "err")
        else:
            out += data
        self._open_line = None if data.endswith(b"\n") else stream
        self._write(out)

    @staticmethod
    def _add_prefixed(out: bytearray, data: bytes, *, at_line_start: bool) -> None:
        pieces = data.split(b"\n")
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            if last and not piece:
                break
            if index > 0 or at_line_start:
                out += STDERR_PREFIX
            out += piece
            if not last:
                out += b"\n"

    def _write(self, out: bytearray) -> None:
        room = self._cap - self.written
        if len(out) <= room:
            self._file.write(out)
            self.written += len(out)
            self._ends_newline = out.endswith(b"\n") if out else self._ends_newline
            return
        if room > 0:
            self._file.write(out[:room])
            self.written += room
            self._ends_newline = out[room - 1:room] == b"\n"
        lead = b"" if self._ends_newline else b"\n"
        self._file.write(lead + f"[conveyor: log truncated after {self.written} bytes]\n".encode())
        self.truncated = True


class _Lines:
    """Cuts stdout into lines for `on_line`; memory is bounded by `max_bytes` whatever the child prints."""

    def __init__(self, emit: Callable[[str], None], max_bytes: int) -> None:
        self._emit = emit
        self._max = max_bytes
        self._buf = bytearray()
        self._pending = False

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        start = 0
        while (newline := data.find(b"\n", start)) >= 0:
            self._keep(view[start:newline])
            self.flush()
            start = newline + 1
        if start < len(data):
            self._keep(view[start:])
            self._pending = True

    def _keep(self, piece: memoryview) -> None:
        room = self._max - len(self._buf)
        if room > 0:
            self._buf += piece[:room]

    def flush(self) -> None:
        line = self._buf.decode("utf-8", errors="replace")
        self._buf = bytearray()
        self._pending = False
        self._emit(line)

    def finish(self) -> None:
        if self._pending:
            self.flush()


class _Pump:
    """Moves bytes: the child's stdout and stderr to the log, lines and tail; `stdin_data` to its stdin."""

    def __init__(self, proc: subprocess.Popen[bytes], spec: ProcessSpec, log_file: _Log,
                 on_line: Callable[[str], None] | None, clock: Clock) -> None:
        self._sel = selectors.DefaultSelector()
        self._clock = clock
        self._log = log_file
        self._lines = _Lines(on_line, spec.max_line_bytes) if on_line is not None else None
        self._tail = bytearray()
        self._stdin = memoryview(spec.stdin_data or b"")
        self.last_output = clock()
        self.output_bytes = 0
        for stream, pipe in (("out", proc.stdout), ("err", proc.stderr), ("in", proc.stdin)):
            if pipe is None:
                continue
            os.set_blocking(pipe.fileno(), False)
            events = selectors.EVENT_WRITE if stream == "in" else selectors.EVENT_READ
            self._sel.register(pipe, events, stream)
        if not self._stdin:
            self.close_stdin()

    @property
    def active(self) -> bool:
        return bool(self._sel.get_map())

    @property
    def log_truncated(self) -> bool:
        return self._log.truncated

    @property
    def stderr_tail(self) -> str:
        return self._tail.decode("utf-8", errors="replace")

    def step(self, timeout: float) -> bool:
        """Wait up to `timeout` for pipe activity and handle it; False when nothing was ready."""
        events = self._sel.select(max(0.0, timeout))
        for key, _mask in events:
            if key.data == "in":
                self._feed_stdin(key.fd)
            else:
                self._read(key, key.data)
        return bool(events)

    def _read(self, key: selectors.SelectorKey, stream: str) -> None:
        try:
            data = os.read(key.fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._unregister(key)
            if stream == "out" and self._lines is not None:
                self._lines.finish()
            return
        self.last_output = self._clock()
        self.output_bytes += len(data)
        self._log.add(data, stream)
        if stream == "err":
            self._tail += data
            del self._tail[:-STDERR_TAIL_BYTES]
        elif self._lines is not None:
            self._lines.feed(data)

    def _feed_stdin(self, fd: int) -> None:
        try:
            written = os.write(fd, self._stdin[:WRITE_CHUNK])
        except BlockingIOError:
            return
        except OSError:  # BrokenPipeError: the child closed stdin or exited; the rest is not wanted
            written = len(self._stdin)
        self._stdin = self._stdin[written:]
        if not self._stdin:
            self.close_stdin()

    def close_stdin(self) -> None:
        for key in list(self._sel.get_map().values()):
            if key.data == "in":
                self._unregister(key)

    def _unregister(self, key: selectors.SelectorKey) -> None:
        self._sel.unregister(key.fileobj)
        with contextlib.suppress(OSError):
            key.fileobj.close()  # type: ignore[union-attr]

    def drain(self, budget_s: float) -> None:
        """Read what is already in the pipes, for at most `budget_s`; stop at the first quiet moment."""
        self.close_stdin()
        deadline = self._clock() + budget_s
        while self.active and self._clock() < deadline and self.step(0):
            pass

    def finish(self) -> None:
        """Deliver a last stdout line that had no newline (reading may stop before EOF)."""
        if self._lines is not None:
            self._lines.finish()

    def close(self) -> None:
        for key in list(self._sel.get_map().values()):
            self._unregister(key)
        self._sel.close()


def _open_log(path: Path) -> BinaryIO:
    try:
        private_dir(path.parent)   # transcripts are private (prompts, code, whatever the agent printed)
        fd = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        return open(fd, "wb", buffering=0)  # the caller closes it
    except OSError as exc:
        raise SpawnError(f"cannot open the log file {path}: {exc.strerror or exc}") from exc


def _spawn(spec: ProcessSpec) -> subprocess.Popen[bytes]:
    if not spec.argv:
        raise SpawnError("cannot start a process: the command line is empty")
    try:
        return subprocess.Popen(
            spec.argv, cwd=spec.cwd, env=spec.env, bufsize=0, close_fds=True, start_new_session=True,
            stdin=subprocess.DEVNULL if spec.stdin_data is None else subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise SpawnError(_spawn_failure(spec, exc)) from exc
    except ValueError as exc:  # an embedded NUL byte cannot cross execve
        raise SpawnError(f"cannot start {spec.argv[0]}: an argument or environment value "
                         f"contains a NUL byte ({exc})") from exc


def _spawn_failure(spec: ProcessSpec, exc: OSError) -> str:
    program = spec.argv[0]
    if exc.filename is not None and os.fsdecode(exc.filename) == os.fsdecode(spec.cwd):
        return f"cannot start {program}: the working directory {spec.cwd} is not usable ({exc.strerror})"
    if isinstance(exc, FileNotFoundError):
        return f"cannot start {program}: there is no such file; check the path (or PATH) it is found by"
    if isinstance(exc, PermissionError):
        return f"cannot start {program}: it is not executable (permission denied); fix the path or chmod +x"
    return f"cannot start {program}: {exc.strerror or exc}"


def _signal_group(pgid: int, sig: int) -> None:
    if pgid <= 1 or pgid == os.getpgrp():  # never signal ourselves, whatever happened to the child
        return
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        log.warning("process_group_signal_refused", pgid=pgid, signal=signal.Signals(sig).name)


def live_members(pgid: int) -> bool:
    """Whether the group still has a member that is not a zombie.

    `killpg(pgid, 0)` also succeeds for zombies, and under a PID 1 that never reaps (a bare container) an
    orphaned grandchild stays a zombie forever; on Linux /proc says which members really run.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.exists("/proc/self/stat"):
        return True
    wanted = str(pgid).encode()
    with os.scandir("/proc") as entries:
        return any(_runs_in_group(entry.name, wanted) for entry in entries if entry.name.isdigit())


def _runs_in_group(pid: str, pgid: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            stat = stat_file.read()
    except OSError:
        return False
    fields = stat[stat.rfind(b")") + 2:].split()  # state, ppid, pgrp, ... after "pid (comm)"
    return len(fields) > 2 and fields[2] == pgid and fields[0] not in (b"Z", b"X")


def _group_alive(proc: subprocess.Popen[bytes]) -> bool:
    proc.poll()  # reap the leader first, or its zombie would count as a member
    return live_members(proc.pid)


def _wait_a_little(proc: subprocess.Popen[bytes], pump: _Pump, seconds: float) -> None:
    if pump.active:
        pump.step(seconds)
    elif proc.poll() is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.0, seconds))
    else:
        time.sleep(max(0.0, min(seconds, _SLICE_S)))


def _wait_for_exit(proc: subprocess.Popen[bytes], pump: _Pump, spec: ProcessSpec,
                   stop: Stop | None, clock: Clock, started: float) -> str | None:
    """Pump until the child exits (→ None) or must be stopped (→ "stop", "timeout" or "idle")."""
    while proc.poll() is None:
        now = clock()
        if stop is not None and stop.is_set():
            return "stop"
        wall_left = started + spec.timeout_s - now
        idle_left = pump.last_output + spec.idle_timeout_s - now
        if wall_left <= 0:
            return "timeout"
        if idle_left <= 0:
            return "idle"
        _wait_a_little(proc, pump, min(_TICK_S, wall_left, idle_left))
    return None


def _await_group_exit(proc: subprocess.Popen[bytes], pump: _Pump, seconds: float, clock: Clock) -> bool:
    """Keep draining until no group member lives or `seconds` pass; True when the group is gone."""
    until = clock() + seconds
    while _group_alive(proc):
        now = clock()
        if now >= until:
            return False
        slice_end = min(until, now + _SLICE_S)
        while clock() < slice_end:
            _wait_a_little(proc, pump, slice_end - clock())
    return True


def _terminate_group(proc: subprocess.Popen[bytes], pump: _Pump, grace_s: float, clock: Clock,
                     logger: structlog.typing.FilteringBoundLogger) -> None:
    _signal_group(proc.pid, signal.SIGTERM)
    if not _await_group_exit(proc, pump, grace_s, clock):
        logger.warning("process_group_killed", grace_s=grace_s)
        _signal_group(proc.pid, signal.SIGKILL)
        if not _await_group_exit(proc, pump, _AFTER_KILL_S, clock):
            logger.error("process_group_survived_sigkill", pgid=proc.pid)
    proc.wait()


def _supervise(proc: subprocess.Popen[bytes], pump: _Pump, spec: ProcessSpec, stop: Stop | None,
               clock: Clock, started: float, result: ProcessResult,
               logger: structlog.typing.FilteringBoundLogger) -> None:
    reason = _wait_for_exit(proc, pump, spec, stop, clock, started)
    result.stopped = reason == "stop"
    result.timed_out = reason == "timeout"
    result.idle_timed_out = reason == "idle"
    if reason is not None:
        logger.warning("process_stopping", reason=reason, elapsed_s=round(clock() - started, 3))
        _terminate_group(proc, pump, spec.kill_grace_s, clock, logger)
    elif _group_alive(proc):
        logger.info("process_group_survivors", exit_code=proc.returncode)
        _terminate_group(proc, pump, spec.kill_grace_s, clock, logger)
    pump.drain(_FINAL_DRAIN_S)


def run_process(spec: ProcessSpec, *, on_line: Callable[[str], None] | None = None,
                on_start: Callable[[int], None] | None = None, stop: Stop | None = None,
                clock: Clock = time.monotonic) -> ProcessResult:
    """Run `spec` to the end under supervision; nothing of its process group outlives this call."""
    with _open_log(spec.log_path) as log_file:
        proc = _spawn(spec)
        try:
            return _supervise_spawned(proc, spec, log_file, on_line, on_start, stop, clock)
        except BaseException:
            _kill_now(proc, clock)  # most likely a caller's callback failed: leave nothing running
            raise


def _kill_now(proc: subprocess.Popen[bytes], clock: Clock) -> None:
    if proc.poll() is None or live_members(proc.pid):
        _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = clock() + _AFTER_KILL_S
    while live_members(proc.pid) and clock() < deadline:
        time.sleep(_SLICE_S / 5)


def _supervise_spawned(proc: subprocess.Popen[bytes], spec: ProcessSpec, log_file: BinaryIO,
                       on_line: Callable[[str], None] | None, on_start: Callable[[int], None] | None,
                       stop: Stop | None, clock: Clock) -> ProcessResult:
    started = clock()
    logger = log.bind(pid=proc.pid, program=os.path.basename(spec.argv[0]))
    logger.info("process_started", cwd=str(spec.cwd))
    result = ProcessResult(exit_code=None, signal=None, pid=proc.pid)
    pump = _Pump(proc, spec, _Log(log_file, spec.log_cap_bytes), on_line, clock)
    try:
        if on_start is not None:
            on_start(proc.pid)
        _supervise(proc, pump, spec, stop, clock, started, result, logger)
        pump.finish()
    finally:
        pump.close()
    returncode = proc.returncode
    result.exit_code = returncode if returncode >= 0 else None
    result.signal = -returncode if returncode < 0 else None
    result.duration_s = clock() - started
    result.output_bytes = pump.output_bytes
    result.log_truncated = pump.log_truncated
    result.stderr_tail = pump.stderr_tail
    logger.info("process_exited", how=ended_how(result), duration_s=round(result.duration_s, 3),
                output_bytes=result.output_bytes)
    return result


def ended_how(result: ProcessResult) -> str:
    """How a run ended, in words: the exit code or signal and why we stopped it, if we did."""
    if result.signal is not None:
        try:
            how = f"killed by {signal.Signals(result.signal).name}"
        except ValueError:
            how = f"killed by signal {result.signal}"
    else:
        how = f"exit code {result.exit_code}"
    if result.timed_out:
        return f"{how} after the wall-clock timeout"
    if result.idle_timed_out:
        return f"{how} after printing nothing for the no-output timeout"
    if result.stopped:
        return f"{how} when stopped on request"
    return how


def succeeded(result: ProcessResult) -> bool:
    """Exit code 0 and not stopped by us."""
    return result.exit_code == 0 and not (result.timed_out or result.idle_timed_out or result.stopped)


def log_tail(path: Path, max_bytes: int = 4096) -> str:
    """The last `max_bytes` of a log file, decoded leniently (for error messages and verify feedback)."""
    try:
        with open(path, "rb") as file:
            file.seek(max(0, file.seek(0, os.SEEK_END) - max_bytes))
            return file.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def run_command(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], log_path: Path, timeout_s: float,
                idle_timeout_s: float | None = None, stop: Stop | None = None,
                check: bool = True) -> ProcessResult:
    """Run a verify-style command; with `check`, a failure raises `CommandFailed` with the output tail.

    The no-output timeout defaults to the wall timeout: a test suite may rightly be quiet for a long time.
    A bare `argv[0]` (`pytest`) is looked up on `env`'s PATH, never on the daemon's.
    """
    spec = ProcessSpec(argv=list(argv), cwd=cwd, env=dict(env), log_path=log_path, timeout_s=timeout_s,
                       idle_timeout_s=timeout_s if idle_timeout_s is None else idle_timeout_s)
    result = run_process(spec, stop=stop)
    if check and not succeeded(result):
        raise CommandFailed(argv, result, log_tail(log_path), log_path)
    return result
