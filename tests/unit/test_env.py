"""The agent environment: allowlist, expansion, and service-manager variables that never pass."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from conveyor.runner.env import NEVER_PASSED, build_env, expand

SOURCE = {"PATH": "/usr/bin", "HOME": "/home/u", "LANG": "C.UTF-8", "ANTHROPIC_API_KEY": "sk-a",
          "ANTHROPIC_BASE_URL": "http://127.0.0.1:1", "OPENAI_API_KEY": "sk-o", "SECRET": "s",
          "anthropic_lower": "l", "NOTIFY_SOCKET": "/run/notify", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "2",
          "LISTEN_FDS": "1", "LISTEN_PID": "3", "LISTEN_FDNAMES": "x", "INVOCATION_ID": "abc"}


def test_only_allowlisted_names_pass() -> None:
    assert build_env(SOURCE, ["PATH", "HOME"], {}) == {"PATH": "/usr/bin", "HOME": "/home/u"}


def test_globs_match_case_sensitively() -> None:
    env = build_env(SOURCE, ["ANTHROPIC_*"], {})
    assert env == {"ANTHROPIC_API_KEY": "sk-a", "ANTHROPIC_BASE_URL": "http://127.0.0.1:1"}


def test_empty_allowlist_passes_nothing() -> None:
    assert build_env(SOURCE, [], {}) == {}


def test_service_manager_variables_never_pass_even_when_allowlisted_or_set() -> None:
    extra = {name: "forced" for name in NEVER_PASSED}
    with capture_logs() as logs:
        env = build_env(SOURCE, ["*", *NEVER_PASSED], extra)
    assert not set(env) & NEVER_PASSED
    assert "SECRET" in env  # "*" really does pass everything else
    assert sorted(e["name"] for e in logs if e["event"] == "env_var_blocked") == sorted(NEVER_PASSED)


def test_extra_is_set_on_top_with_expansion_from_source() -> None:
    env = build_env(SOURCE, ["PATH"], {"PATH": "/opt/bin:${PATH}", "KEY": "${OPENAI_API_KEY}",
                                       "FIXED": "plain"})
    assert env == {"PATH": "/opt/bin:/usr/bin", "KEY": "sk-o", "FIXED": "plain"}


def test_expansion_reads_source_not_other_extra_entries() -> None:
    assert build_env({}, [], {"A": "1", "B": "${A}"}) == {"A": "1", "B": ""}


@pytest.mark.parametrize(("raw", "expected"), [
    ("$${HOME}", "${HOME}"),
    ("$$${HOME}", "$${HOME}"),  # scanning finds `$` then the escape `$${`
    ("$HOME", "$HOME"),
    ("${HOME", "${HOME"),
    ("${}", "${}"),
    ("${1X}", "${1X}"),
    ("cost: $5", "cost: $5"),
    ("${HOME}/${LANG}", "/home/u/C.UTF-8"),
])
def test_expand_forms(raw: str, expected: str) -> None:
    assert expand(raw, SOURCE)[0] == expected


def test_missing_variable_expands_to_empty_and_is_logged() -> None:
    with capture_logs() as logs:
        env = build_env(SOURCE, [], {"TOKEN": "Bearer ${NOPE}"})
    assert env == {"TOKEN": "Bearer "}
    assert [(e["event"], e["name"], e["setting"]) for e in logs] == [("env_var_missing", "NOPE", "TOKEN")]


def test_a_variable_set_to_empty_is_not_missing() -> None:
    assert expand("${EMPTY}", {"EMPTY": ""}) == ("", [])


def test_result_is_a_fresh_dict() -> None:
    source = {"PATH": "/bin"}
    env = build_env(source, ["PATH"], {})
    env["PATH"] = "changed"
    assert source == {"PATH": "/bin"}
