"""Per-tool pacing: runs at once and starts per minute, exact under many threads."""

from __future__ import annotations

import threading
import time

from conveyor.config.models import ToolLimits
from conveyor.scheduling.concurrency import ToolGate, rate_window


def test_rate_windows() -> None:
    assert rate_window(6) == (6, 60.0)
    assert rate_window(0.5) == (1, 120.0)
    assert rate_window(1.5) == (1, 40.0)


def test_max_parallel_per_tool() -> None:
    gate = ToolGate(lambda: {"claude": ToolLimits(max_parallel=2)}, time.time)
    assert gate.try_start("claude") is None and gate.try_start("claude") is None
    refused = gate.try_start("claude")
    assert refused is not None and "2 runs at once" in refused
    assert gate.try_start("codex") is None            # another tool is not affected
    gate.finish("claude")
    assert gate.try_start("claude") is None
    assert gate.running() == {"claude": 2, "codex": 1}


def test_starts_per_minute() -> None:
    now = [1000.0]
    gate = ToolGate(lambda: {"codex": ToolLimits(starts_per_minute=2)}, lambda: now[0])
    assert gate.try_start("codex") is None
    now[0] += 10
    assert gate.try_start("codex") is None
    gate.finish("codex")
    gate.finish("codex")
    assert gate.try_start("codex") is not None
    assert gate.next_opening("codex") == 1060.0      # the first start leaves the 60 s window
    now[0] = 1060.0
    assert gate.try_start("codex") is None


def test_limits_follow_a_reload() -> None:
    limits = {"claude": ToolLimits(max_parallel=1)}
    gate = ToolGate(lambda: limits, time.time)
    assert gate.try_start("claude") is None
    assert gate.try_start("claude") is not None
    limits["claude"] = ToolLimits(max_parallel=3)
    assert gate.try_start("claude") is None


def test_many_threads_never_exceed_the_limit() -> None:
    gate = ToolGate(lambda: {"claude": ToolLimits(max_parallel=3)}, time.time)
    lock = threading.Lock()
    current, peak = [0], [0]

    def worker() -> None:
        for _ in range(200):
            if gate.try_start("claude") is None:
                with lock:
                    current[0] += 1
                    peak[0] = max(peak[0], current[0])
                time.sleep(0)
                with lock:
                    current[0] -= 1
                gate.finish("claude")

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak[0] == 3 and gate.running() == {}
