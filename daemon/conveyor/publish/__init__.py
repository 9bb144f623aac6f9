"""Publishing a task's branch for review: pull requests through the GitHub REST API."""
