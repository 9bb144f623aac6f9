"""The `conveyor` command line: one module per subcommand, one error handler in `main`.

May import: anything; nothing imports the CLI.
"""
