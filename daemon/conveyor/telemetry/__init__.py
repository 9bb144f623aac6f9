"""The record of every agent run: SQLite on one host (`store`), the fleet's PostgreSQL with `coordination:`
(`pg_store`), both behind `base.TelemetryStore`; the schema, and the rollups `conveyor stats` prints
(`stats` on SQLite, `pg_stats` on PostgreSQL, `review_stats` shared by both dialects).

May import: core, runner (token and outcome types).
"""
