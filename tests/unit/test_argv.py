"""argv templates: one element is one argument, whatever the values contain."""

from __future__ import annotations

import pytest

from conveyor.config.argv import ArgvTemplateError, placeholders_in, render_argv

CLAUDE = ["-p", "{prompt}", "--output-format", "json", ["--model", "{model}"], ["--max-turns", "{max_turns}"],
          ["--resume", "{session_id}"]]


def test_required_and_optional_elements() -> None:
    values = {"prompt": "do it", "model": "opus", "max_turns": "7", "session_id": None}
    assert render_argv(CLAUDE, values) == ["-p", "do it", "--output-format", "json", "--model", "opus",
                                           "--max-turns", "7"]


def test_optional_group_dropped_when_a_placeholder_is_missing_or_none() -> None:
    assert render_argv(CLAUDE, {"prompt": "x"}) == ["-p", "x", "--output-format", "json"]
    assert render_argv([["--a", "{a}", "{b}"]], {"a": "1", "b": None}) == []
    assert render_argv([["--a", "{a}", "{b}"]], {"a": "1", "b": "2"}) == ["--a", "1", "2"]


def test_group_without_placeholders_is_always_kept() -> None:
    assert render_argv([["--verbose"], []], {}) == ["--verbose"]


@pytest.mark.parametrize("value", ["a b", "'quoted' \"too\"", "$(touch pwned)", "`id`", "; rm -rf /",
                                   "line1\nline2", "-rf", "--model=evil", "{model}", "{{x}}", "", "%s %(x)s",
                                   "tab\there", "é✓"])
def test_a_value_is_exactly_one_argument(value: str) -> None:
    assert render_argv(["-p", "{prompt}", "end"], {"prompt": value, "model": "m"}) == ["-p", value, "end"]


def test_placeholder_inside_a_longer_argument() -> None:
    values = {"workdir": "/tmp/a b", "model": "m"}
    assert render_argv(["--cd={workdir}", "{model}-{model}"], values) == ["--cd=/tmp/a b", "m-m"]


def test_escaped_braces_are_literal() -> None:
    template = ["-c", 'model_providers.fake={{name="fake", env_key="{key}"}}']
    assert render_argv(template, {"key": "K"}) == ["-c", 'model_providers.fake={name="fake", env_key="K"}']
    assert placeholders_in(template) == {"key"}


def test_unknown_placeholder_in_a_required_element_names_it_and_the_known_ones() -> None:
    with pytest.raises(ArgvTemplateError, match=r"unknown placeholder \{promt\}; known placeholders: model, "
                                                r"prompt"):
        render_argv(["{promt}"], {"prompt": "x", "model": None})


def test_required_placeholder_without_a_value_says_how_to_make_it_optional() -> None:
    with pytest.raises(ArgvTemplateError, match=r"needs \{model\}.*put the argument in a list"):
        render_argv(["--model", "{model}"], {"model": None})


def test_argv_template_error_is_a_value_error() -> None:
    assert issubclass(ArgvTemplateError, ValueError)


@pytest.mark.parametrize("element", ["{", "}", "a{b", "{}", "{0}", "{a.b}", "{a:>3}", "{a!r}", "{ a }",
                                     "x}y"])
def test_malformed_elements_are_rejected(element: str) -> None:
    with pytest.raises(ArgvTemplateError, match="stray"):
        placeholders_in([element])
    with pytest.raises(ArgvTemplateError, match="stray"):
        render_argv([element], {"a": "1"})


def test_non_string_in_a_group_is_rejected() -> None:
    with pytest.raises(ArgvTemplateError, match="may only contain strings"):
        render_argv([["--a", ["nested"]]], {})  # type: ignore[list-item]


def test_placeholders_in_collects_required_and_optional() -> None:
    assert placeholders_in(CLAUDE) == {"prompt", "model", "max_turns", "session_id"}
    assert placeholders_in(["exec", "--json"]) == set()
