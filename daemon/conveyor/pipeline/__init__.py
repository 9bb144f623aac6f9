"""One claimed task from start to end: workspace, agent runs with fallbacks, the completion gate and
fix rounds (`conclude`), the commit and publishing, and the one finish path (`finish`) that start-up
recovery uses too.

May import: every box below it (board, checks, config, core, publish, runner, scheduling, telemetry,
workspace); never the daemon.
"""
