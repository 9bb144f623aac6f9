"""The `conveyor` command line: one module per subcommand, one error handler in `main`."""
