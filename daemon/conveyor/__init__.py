"""Conveyor: task files and roadmap items in, reviewed pull requests out."""

__version__ = "0.1.0"
