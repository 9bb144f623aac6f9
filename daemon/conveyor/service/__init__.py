"""Run Conveyor as a user service: the unit/plist it renders, installing it, and the sd_notify client.

`render` builds the systemd user unit and the launchd plist from the templates in `templates/`; `install`
writes them into the user's service directory and drives `systemctl --user` / `launchctl`; `notify` tells
systemd the truth (READY=1 after recovery, STATUS=, STOPPING=1, and WATCHDOG=1 only while the loop lives).

Import the submodules themselves: this package re-exports nothing, so the daemon's status snapshot can
use `notify` without loading the installer and the renderer (plistlib, templates) into `conveyor status`.

May import: core.
"""
