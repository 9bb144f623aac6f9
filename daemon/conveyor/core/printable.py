"""Text an agent printed, made safe to show and store: everything an agent says is data, never control.

An agent's final message (or a verify command's output, which runs the agent's code) ends up in commit
messages, pull request bodies, task files and the terminal. Escape sequences there can rewrite what a
person sees in a terminal (OSC 8 links, cursor moves, clearing a line with CR), and a NUL byte cannot
pass through a command line at all (it once made a task lose its finished work). So: ANSI/VT escape
sequences (CSI, OSC, DCS/PM/APC/SOS strings, two-byte ESC sequences) go whole, CR LF becomes LF, and
every other C0 or C1 control character and DEL goes; newline and tab stay.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_SEQUENCES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"                          # CSI ... final byte (colours, cursor moves)
    r"|\x9b[0-?]*[ -/]*[@-~]"                           # the same with the 8-bit CSI
    r"|[\x1b][\]PX^_][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"   # OSC/DCS/SOS/PM/APC strings to BEL or ST
    r"|[\x90\x98\x9d\x9e\x9f][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?")                               # any other ESC sequence (or a lone ESC)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` without escape sequences and control characters (newline and tab kept, CR LF → LF)."""
    if text.isprintable():   # the common case: nothing to do (newlines and tabs are not printable)
        return text
    text = _SEQUENCES.sub("", text).replace("\r\n", "\n")
    return _CONTROLS.sub("", text)


def printable_data(value: Any) -> Any:
    """`printable` applied to every string inside nested dicts and lists (a task's result or error block)."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, Mapping):
        return {printable_data(key): printable_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [printable_data(item) for item in value]
    return value
