"""ROADMAP.md as data: parse it, choose what runs next, and write progress back one line at a time.

The pure core (`lines`, `model`, `parse`, `select`, `edit`) works on text; `file` reads and writes
ROADMAP.md safely and `sync` turns items into tasks and task progress into status lines.

May import: core, config, board.
"""
