"""Turn a tools.yaml argv template into a concrete argv, one template element per argument.

Why a template of whole arguments rather than a command string: nothing is ever run by a shell, so a
prompt full of quotes, `$(...)` or newlines can only ever be data. A placeholder fills part of exactly one
argument; it can never split an argument or join two. A list inside the template is an optional group,
dropped as a whole when any of its placeholders has no value (`["--model", "{model}"]` without a model).

Syntax: `{name}` with name `[A-Za-z_][A-Za-z0-9_]*`; `{{` and `}}` are literal braces. Anything else with a
brace (`{}`, `{0}`, `{a.b}`, `{a:>3}`, a lone `{`) is rejected, so a typo fails at config load, not at run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache

Template = Sequence[str | Sequence[str]]

_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]")


class ArgvTemplateError(ValueError):
    """A template is malformed, or names a placeholder this run has no value for."""


@lru_cache(maxsize=256)
def _parse(element: str) -> tuple[tuple[str, bool], ...]:
    """Split one element into (text, is_placeholder) parts; raise on a stray or malformed brace."""
    parts: list[tuple[str, bool]] = []
    pos = 0
    for match in _TOKEN.finditer(element):
        if match.start() > pos:
            parts.append((element[pos:match.start()], False))
        token = match.group(0)
        if match.group(1) is not None:
            parts.append((match.group(1), True))
        elif token in ("{{", "}}"):
            parts.append((token[0], False))
        else:
            raise ArgvTemplateError(
                f"argument {element!r} has a stray {token!r} at position {match.start()}: write "
                f"{{name}} for a placeholder and {token * 2!r} for a literal brace")
        pos = match.end()
    if pos < len(element):
        parts.append((element[pos:], False))
    return tuple(parts)


def _groups(template: Template) -> list[tuple[list[str], bool]]:
    """Each template entry as (elements, optional); a bare string is a required group of one."""
    groups: list[tuple[list[str], bool]] = []
    for entry in template:
        if isinstance(entry, str):
            groups.append(([entry], False))
            continue
        if not all(isinstance(item, str) for item in entry):
            raise ArgvTemplateError(f"optional group {list(entry)!r} may only contain strings")
        groups.append((list(entry), True))
    return groups


def placeholders_in(template: Template) -> set[str]:
    """Every placeholder name the template uses, for config validation; raises on a malformed element."""
    names: set[str] = set()
    for elements, _optional in _groups(template):
        for element in elements:
            names.update(text for text, is_name in _parse(element) if is_name)
    return names


def _fill(element: str, values: Mapping[str, str | None]) -> str | None:
    """The element with its placeholders filled; None when one of them has no value."""
    out: list[str] = []
    for text, is_name in _parse(element):
        if not is_name:
            out.append(text)
            continue
        value = values.get(text)
        if value is None:
            return None
        out.append(str(value))
    return "".join(out)


def _missing_error(element: str, values: Mapping[str, str | None]) -> ArgvTemplateError:
    names = [text for text, is_name in _parse(element) if is_name]
    known = ", ".join(sorted(values)) or "(none)"
    unknown = [name for name in names if name not in values]
    if unknown:
        return ArgvTemplateError(f"argument {element!r} uses unknown placeholder {{{unknown[0]}}}; "
                                 f"known placeholders: {known}")
    empty = next(name for name in names if values.get(name) is None)
    return ArgvTemplateError(f"argument {element!r} needs {{{empty}}}, which has no value for this run; "
                             "put the argument in a list to make it optional")


def render_argv(template: Template, values: Mapping[str, str | None]) -> list[str]:
    """Fill the template: one output argument per element, optional groups dropped when incomplete."""
    argv: list[str] = []
    for elements, optional in _groups(template):
        filled = [_fill(element, values) for element in elements]
        missing = [element for element, arg in zip(elements, filled, strict=True) if arg is None]
        if not missing:
            argv.extend(arg for arg in filled if arg is not None)
        elif not optional:
            raise _missing_error(missing[0], values)
    return argv
