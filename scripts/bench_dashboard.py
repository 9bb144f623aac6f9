"""Dashboard figures for scripts/bench.py: first byte of the board page, server-sent event latency after a
file move (p50/p95), and the daemon's idle CPU with and without a dashboard client connected."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil


def _start_dashboard(repo: Path) -> tuple[subprocess.Popen[bytes], str]:
    runtime = repo / ".git" / "conveyor" / "dashboard.json"
    proc = subprocess.Popen([sys.executable, "-m", "conveyor", "dashboard", "--repo", str(repo), "--port", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not runtime.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("the dashboard did not start")
        time.sleep(0.02)
    port = json.loads(runtime.read_text())["port"]
    base = f"http://127.0.0.1:{port}"
    while True:
        try:
            httpx.get(base + "/static/dashboard.css", timeout=2)
            return proc, base
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _client(repo: Path, base: str) -> httpx.Client:
    token = (repo / ".git" / "conveyor" / "dashboard.token").read_text().strip()
    client = httpx.Client(base_url=base, timeout=30)
    client.get(f"/login?token={token}").raise_for_status()
    return client


class _Stream(threading.Thread):
    """One connected event-stream client: it remembers when each event arrived."""

    def __init__(self, client: httpx.Client) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.arrivals: list[tuple[float, str]] = []

    def run(self) -> None:
        try:
            with self.client.stream("GET", "/events", timeout=httpx.Timeout(30, read=None)) as response:
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        self.arrivals.append((time.monotonic(), line))
        except httpx.HTTPError:
            return


def bench_dashboard(root: Path, make_repo: Callable[[Path, int], Path], drop: Callable[[Path, str], float],
                    samples: int, idle_s: float, percentile: Callable[[list[float], float], float],
                    log: Callable[[str], None]) -> dict[str, Any]:
    log(f"dashboard: first byte x{samples}, SSE latency after a file move x{samples}, idle CPU {idle_s:.0f} s")
    repo = make_repo(root, 10)
    inbox = repo / "work" / "collaboration" / "inbox"
    proc, base = _start_dashboard(repo)
    try:
        client = _client(repo, base)
        first_byte = []
        for _ in range(samples):
            started = time.perf_counter()
            with client.stream("GET", "/") as response:
                next(response.iter_bytes())
                first_byte.append((time.perf_counter() - started) * 1000)
        stream = _Stream(_client(repo, base))
        stream.start()
        while not stream.arrivals:
            time.sleep(0.01)
        latency = []
        for index in range(samples):
            task_id = f"sse-{index:03d}"
            seen = len(stream.arrivals)
            moved = time.monotonic()
            drop(inbox, task_id)
            deadline = moved + 30
            while not any(f'"{task_id}"' in line for _, line in stream.arrivals[seen:]):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no event for {task_id}")
                time.sleep(0.001)
            arrived = next(at for at, line in stream.arrivals[seen:] if f'"{task_id}"' in line)
            latency.append((arrived - moved) * 1000)
            (inbox / f"{task_id}.yaml").unlink()
            time.sleep(0.1)
        for path in inbox.glob("*.yaml"):
            path.unlink()
        idle = _idle_cpu(repo, idle_s, log)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    def p50_p95(values: list[float]) -> dict[str, float]:
        return {"p50": round(percentile(values, 0.5), 2), "p95": round(percentile(values, 0.95), 2)}

    return {"first_byte_ms": p50_p95(first_byte), "sse_after_move_ms": p50_p95(latency), "samples": samples, **idle}


def _idle_cpu(repo: Path, seconds: float, log: Callable[[str], None]) -> dict[str, Any]:
    """The daemon's CPU over `seconds` idle: first alone, then with the dashboard serving one live client
    (the dashboard runs as its own process; its CPU is reported beside the daemon's)."""
    daemon = subprocess.Popen([sys.executable, "-m", "conveyor", "run", "--repo", str(repo), "--json-logs"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    try:
        handle = psutil.Process(daemon.pid)
        status = repo / ".git" / "conveyor" / "status.json"
        deadline = time.monotonic() + 60
        while not status.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2)
        alone = _cpu_percent([handle], seconds)
        log("dashboard: idle CPU with a live client connected")
        dashboard = None
        for proc in psutil.process_iter(["cmdline"]):
            if "dashboard" in (proc.info["cmdline"] or []) and str(repo) in (proc.info["cmdline"] or []):
                dashboard = proc
        runtime = json.loads((repo / ".git" / "conveyor" / "dashboard.json").read_text())
        stream = _Stream(_client(repo, f"http://127.0.0.1:{runtime['port']}"))
        stream.start()
        time.sleep(1)
        with_client = _cpu_percent([handle], seconds)
        dashboard_cpu = _cpu_percent([dashboard], seconds) if dashboard is not None else None
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
    return {"daemon_idle_cpu_percent": alone, "daemon_idle_cpu_percent_with_client": with_client,
            "dashboard_idle_cpu_percent_with_client": dashboard_cpu, "idle_s": seconds}


def _cpu_percent(processes: list[psutil.Process], seconds: float) -> float:
    before = [p.cpu_times() for p in processes]
    time.sleep(seconds)
    after = [p.cpu_times() for p in processes]
    used = sum((a.user - b.user) + (a.system - b.system) for a, b in zip(after, before, strict=True))
    return round(100 * used / seconds, 3)
