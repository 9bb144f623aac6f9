"""The SQLite record of every agent run (`store`), its schema, and the rollups `conveyor stats` prints.

May import: core, runner (token and outcome types).
"""
