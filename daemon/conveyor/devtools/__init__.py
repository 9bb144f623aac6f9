"""Developer and test tooling: pinned agent CLIs and a scripted fake model server. Never used by the daemon."""
