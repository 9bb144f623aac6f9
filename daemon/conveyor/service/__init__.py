"""Run Conveyor as a user service: the unit/plist it renders, installing it, and the sd_notify client.

`render` builds the systemd user unit and the launchd plist from the templates in `templates/`; `install`
writes them into the user's service directory and drives `systemctl --user` / `launchctl`; `notify` tells
systemd the truth (READY=1 after recovery, STATUS=, STOPPING=1, and WATCHDOG=1 only while the loop lives).

May import: core.
"""

from conveyor.service.install import ServiceReport, ServiceStatus, install, status, uninstall
from conveyor.service.notify import Heartbeat, Notifier, status_line, watchdog_interval_s
from conveyor.service.render import (
    ServiceError,
    ServiceParams,
    default_params,
    render_launchd_plist,
    render_systemd_unit,
)

__all__ = [
    "Heartbeat",
    "Notifier",
    "ServiceError",
    "ServiceParams",
    "ServiceReport",
    "ServiceStatus",
    "default_params",
    "install",
    "render_launchd_plist",
    "render_systemd_unit",
    "status",
    "status_line",
    "uninstall",
    "watchdog_interval_s",
]
