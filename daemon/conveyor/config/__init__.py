"""Configuration: pydantic models of the five YAML files and their loader."""

from conveyor.config.loader import CONFIG_FILES, DEFAULT_AGENT, Config, builtin_text, load_config

__all__ = ["CONFIG_FILES", "DEFAULT_AGENT", "Config", "builtin_text", "load_config"]
