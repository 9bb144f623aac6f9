"""Configuration: pydantic models of the five YAML files, their loader, the argv template language of
tools.yaml, and the few resolved values read-only commands remember without pydantic (`board_settings`).

The names below are looked up on first use (PEP 562): importing `conveyor.config.board_settings` must not
import the loader, and with it pydantic (~0.2 s), for `conveyor status`.

May import: core.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.config.board_settings import CONFIG_FILES, builtin_text
    from conveyor.config.loader import DEFAULT_AGENT, Config, load_config

_HOMES = {"CONFIG_FILES": "board_settings", "builtin_text": "board_settings", "DEFAULT_AGENT": "loader",
          "Config": "loader", "load_config": "loader"}
__all__ = ["CONFIG_FILES", "DEFAULT_AGENT", "Config", "builtin_text", "load_config"]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"conveyor.config.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'conveyor.config' has no attribute {name!r}")
