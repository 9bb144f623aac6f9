"""The completion gate: checks a change must pass before it is committed (allowed paths, no secrets)."""
