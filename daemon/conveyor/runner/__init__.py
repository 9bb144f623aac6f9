"""Running agent CLIs: environment, process supervision (`process`), one invocation (`invoke`), the prompt,
the pid notes recovery reads (`pids`), and output parsers that turn each CLI's output into one `ParsedRun`.

May import: core, config (tool settings and the argv template language).
"""
