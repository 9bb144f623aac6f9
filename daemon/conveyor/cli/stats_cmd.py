"""`conveyor stats`: runs, success, tokens, cost and durations per day, month, agent, model or tool.

The numbers come from the telemetry store (aggregated inside SQLite, or the fleet's PostgreSQL with
`coordination:`); this module only parses the options
and prints: a table that fits 80 columns (runs and cost, outcomes, tokens as separate tables), CSV, or
JSON shaped `{group: [row, ...]}`.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from conveyor.cli.common import console, load_settings, repo_option
from conveyor.config.board_settings import BoardSettings
from conveyor.core.logs import apply_deferred_logging
from conveyor.telemetry import stats
from conveyor.telemetry.review_stats import REVIEW_GROUPS
from conveyor.telemetry.store import Telemetry

if TYPE_CHECKING:   # rich is imported where a table is drawn: `--format json` and csv need none of it
    from rich.table import Table

    from conveyor.telemetry.base import TelemetryStore

DEFAULT_GROUPS = ("agent", "tool", "model")
REVIEW_COLUMNS = ("key", "tasks", "reviews", "review_cost_usd", "fix_rounds", "merged", "closed", "acceptance_rate")
TOKEN_NAMES = {"input_tokens": "input", "output_tokens": "output", "cache_read_tokens": "cache_read",
               "cache_write_tokens": "cache_write"}
COLUMNS = ("key", "invocations", "ok", "success_rate", "input", "output", "cache_read", "cache_write", "cost_usd",
           "p50_s", "p95_s", "merged", "closed", "acceptance_rate", "cost_per_merged_usd")


@click.command("stats")
@repo_option
@click.option("--since", default=None, help="From this moment: YYYY-MM-DD (UTC midnight) or ISO 8601.")
@click.option("--until", default=None, help="Up to this moment (exclusive); a bare date includes that whole day.")
@click.option("--by", "by", type=click.Choice([*stats.GROUPS, *REVIEW_GROUPS]), default=None,
              help="Group by day, month, agent, model or tool (default: agent, tool and model, and the "
                   "review figures by author and reviewer when any task was reviewed).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table")
def command(repo: Path | None, config_dir: Path | None, since: str | None, until: str | None, by: str | None,
            fmt: str) -> None:
    """Invocations, success rate, tokens, cost, p50/p95 duration, and cost per merged change."""
    window = _window(since, until)
    settings = load_settings(repo, config_dir)   # without pydantic while the configuration is unchanged
    groups = (by,) if by else DEFAULT_GROUPS
    telemetry, close = _store(settings)           # this host's SQLite, or the whole fleet's PostgreSQL
    try:
        data = {group: [_public(row) for row in telemetry.collect(group, window)]  # type: ignore[arg-type]
                for group in groups if group not in REVIEW_GROUPS}
        reviews = {f"review_by_{group}": telemetry.reviews(group, window.since, window.until)
                   for group in REVIEW_GROUPS if by in (None, group)}
    finally:
        close()
    if not by:
        reviews = {name: rows for name, rows in reviews.items() if rows}
    if fmt == "json":
        click.echo(json.dumps({**data, **reviews}, indent=1))
    elif fmt == "csv":
        _csv(data)
        _review_csv(reviews)
    else:
        _tables(data)
        _review_tables(reviews)


def _store(settings: BoardSettings) -> tuple[TelemetryStore, Callable[[], None]]:
    """The telemetry to read and how to let it go; the fleet's modules are imported only for a fleet."""
    if settings.coordination is None:
        telemetry = Telemetry(settings.telemetry_db, privacy=settings.privacy)
        return telemetry, telemetry.close
    from conveyor.coordination.shared import open_stores

    apply_deferred_logging()   # the fleet's modules log through structlog directly
    shared = open_stores(settings.coordination, settings.telemetry_db, settings.privacy)
    return shared.telemetry, shared.close


def _window(since: str | None, until: str | None) -> stats.Window:
    try:
        return stats.Window(None if since is None else stats.parse_moment(since),
                            None if until is None else stats.parse_moment(until, end_of_day=True))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """Token columns named as in task results; a missing model shown as `-`."""
    out = {TOKEN_NAMES.get(name, name): value for name, value in row.items()}
    out["key"] = "-" if out["key"] is None else out["key"]
    return out


def _csv(data: dict[str, list[dict[str, Any]]]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["group", *COLUMNS])
    for group, rows in data.items():
        for row in rows:
            writer.writerow([group, *("" if row.get(name) is None else row.get(name) for name in COLUMNS)])


def _tables(data: dict[str, list[dict[str, Any]]]) -> None:
    out = console()
    for group, rows in data.items():
        if not rows:
            out.print(f"By {group}: no invocations in this period")
            continue
        out.print(_table(f"By {group}: runs and cost (run ok = the agent CLI ended normally, whatever the "
                         "checks said)", group, rows, [
            # "run ok": the CLI ended normally; the task may still have failed its checks (`conveyor status`)
            ("runs", lambda r: _count(r["invocations"])), ("run ok %", lambda r: _percent(r["success_rate"])),
            ("USD", lambda r: _money(r["cost_usd"])), ("p50 s", lambda r: _seconds(r["p50_s"])),
            ("p95 s", lambda r: _seconds(r["p95_s"]))]))
        if group in stats.OUTCOME_GROUPS:
            out.print(_table(f"By {group}: outcomes of changes", group, rows, [
                ("merged", lambda r: str(r["merged"])), ("closed", lambda r: str(r["closed"])),
                ("accept %", lambda r: _percent(r["acceptance_rate"])),
                ("USD/merged", lambda r: _money(r["cost_per_merged_usd"]))]))
        out.print(_table(f"By {group}: tokens", group, rows, [
            (name.replace("_", " "), lambda r, n=name: _count(r[n])) for name in ("input", "output", "cache_read",
                                                                                  "cache_write")]))


def _review_csv(reviews: dict[str, list[dict[str, Any]]]) -> None:
    if not reviews:
        return
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["group", *REVIEW_COLUMNS])
    for group, rows in reviews.items():
        for row in rows:
            writer.writerow([group, *("" if row.get(name) is None else row.get(name) for name in REVIEW_COLUMNS)])


def _review_tables(reviews: dict[str, list[dict[str, Any]]]) -> None:
    out = console()
    for group, rows in reviews.items():
        who = group.removeprefix("review_by_")
        if not rows:
            out.print(f"Reviews by {who}: no reviewed task in this period")
            continue
        out.print(_table(f"Reviews by {who}", who, rows, [
            ("tasks", lambda r: str(r["tasks"])), ("reviews", lambda r: str(r["reviews"])),
            ("review USD", lambda r: _money(r["review_cost_usd"])), ("fix rounds", lambda r: str(r["fix_rounds"])),
            ("merged", lambda r: str(r["merged"])), ("closed", lambda r: str(r["closed"])),
            ("accept %", lambda r: _percent(r["acceptance_rate"]))]))


def _table(title: str, group: str, rows: list[dict[str, Any]], columns: list[tuple[str, Any]]) -> Table:
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column(group, max_width=24, overflow="ellipsis", no_wrap=True)
    for header, _ in columns:
        table.add_column(header, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(str(row["key"]), *(render(row) for _, render in columns))
    return table


def _count(value: int | None) -> str:
    """Short counts for narrow columns: 12345 → 12k, 3456789 → 3.5M."""
    number = value or 0
    if number >= 1e9:
        return f"{number / 1e9:.1f}G"
    if number >= 1e6:
        return f"{number / 1e6:.1f}M"
    if number >= 1e4:
        return f"{number / 1e3:.0f}k"
    return str(number)


def _money(value: float | None) -> str:
    """Dollars to the cent, but small sums keep their first digits: an agent run often costs < $0.01."""
    if value is None:
        return "-"
    if value == 0 or abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.4f}" if abs(value) >= 0.0001 else f"{value:.1e}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
