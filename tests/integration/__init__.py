"""Integration tests: real subprocesses, real git, real sockets on 127.0.0.1."""
