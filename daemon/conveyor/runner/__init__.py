"""Running agent CLIs: argv rendering, environment, process supervision, output parsing."""
