"""SIGHUP: read the configuration again, and decide whether the running daemon may take it.

A configuration that does not validate is refused (the running one stays), and so is one that changes a
setting the daemon bound at start-up (paths of the lock, watcher and database): those need a restart.
"""

from __future__ import annotations

import structlog

from conveyor.config import Config, load_config
from conveyor.core.errors import ConfigError

log = structlog.get_logger("conveyor.daemon")
# Settings read once at start-up (paths the lock, watcher and database are bound to): a reload that
# changes one of them is refused, with a line saying to restart instead.
RESTART_ONLY = ("board_dir", "state_dir", "worktrees_dir", "telemetry_db")


def reloaded(current: Config) -> Config | None:
    """The configuration on disk now, or None (logged with what to do) when it must not replace `current`."""
    try:
        fresh = load_config(current.repo, current.git_dir, current.config_dir, env=current.env)
    except ConfigError as exc:
        log.error("config.reload_refused", problems=[p.render() for p in exc.problems],
                  note="the previous configuration stays in force; fix the files and send SIGHUP again")
        return None
    changed = [key for key in RESTART_ONLY if getattr(fresh.daemon, key) != getattr(current.daemon, key)]
    if changed:
        log.error("config.reload_refused", changed=changed,
                  note="these settings apply only at start-up; the previous configuration stays in "
                       "force: restart the daemon to apply them")
        return None
    return fresh
