"""Configuration: pydantic models of the five YAML files, their loader, and the argv template language
of tools.yaml.

May import: core.
"""

from conveyor.config.loader import CONFIG_FILES, DEFAULT_AGENT, Config, builtin_text, load_config

__all__ = ["CONFIG_FILES", "DEFAULT_AGENT", "Config", "builtin_text", "load_config"]
