"""The YAML module: hostile input is refused with a line and a fix, values stay as written, writes are atomic."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from conveyor.core import yamlio
from conveyor.core.yamlio import YamlProblem


# ------------------------------------------------------------------ read_limited
def test_reads_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_bytes(b"id: a\n")
    assert yamlio.read_limited(path) == b"id: a\n"


def test_refuses_a_symlink_without_following_it(tmp_path: Path) -> None:
    real = tmp_path / "real.yaml"
    real.write_text("id: a\n")
    link = tmp_path / "link.yaml"
    link.symlink_to(real)
    with pytest.raises(YamlProblem, match="symbolic link") as caught:
        yamlio.read_limited(link)
    assert "task file itself" in caught.value.fix


def test_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    with pytest.raises(YamlProblem, match="not a regular file"):
        yamlio.read_limited(fifo)  # no writer: a blocking open would hang here (pytest-timeout would fail it)


def test_refuses_a_directory(tmp_path: Path) -> None:
    folder = tmp_path / "dir.yaml"
    folder.mkdir()
    with pytest.raises(YamlProblem, match="not a regular file"):
        yamlio.read_limited(folder)


def test_refuses_a_file_over_the_cap_and_accepts_one_at_it(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * 101)
    with pytest.raises(YamlProblem, match="101 bytes, over the 100-byte limit") as caught:
        yamlio.read_limited(path, max_bytes=100)
    assert caught.value.fix
    path.write_bytes(b"#" * 100)
    assert len(yamlio.read_limited(path, max_bytes=100)) == 100


def test_default_cap_is_one_mebibyte(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"a: b\n" + b"#" * (1024 * 1024))
    with pytest.raises(YamlProblem, match="over the 1048576-byte limit"):
        yamlio.read_limited(path)


def test_missing_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(YamlProblem, match="cannot be opened"):
        yamlio.read_limited(tmp_path / "gone.yaml")


# ------------------------------------------------------------------ loads
def test_timestamps_and_dates_stay_strings() -> None:
    doc = yamlio.loads(b"created_at: 2026-11-23T09:00:00Z\nday: 2026-11-23\nquoted: '2026-11-23T09:00:00Z'\n")
    assert doc == {"created_at": "2026-11-23T09:00:00Z", "day": "2026-11-23", "quoted": "2026-11-23T09:00:00Z"}


def test_other_scalars_keep_their_yaml_types() -> None:
    assert yamlio.loads("n: 3\nf: 1.5\nb: true\nz: null\n") == {"n": 3, "f": 1.5, "b": True, "z": None}


def test_invalid_yaml_names_the_line() -> None:
    with pytest.raises(YamlProblem) as caught:
        yamlio.loads(b"id: a\nagent: b\nlist: [1, 2\nother: x\n")
    assert caught.value.message.startswith("is not valid YAML")
    assert caught.value.line is not None and caught.value.line >= 3
    assert "syntax" in caught.value.fix


def test_unclosed_alias_like_the_seed_board_names_its_line() -> None:
    text = "id: a\nagent: b\nrequirements:\n  - x:\n      * Phase 1: someone\n"
    with pytest.raises(YamlProblem) as caught:
        yamlio.loads(text)
    assert caught.value.line == 5


def test_python_tags_are_refused() -> None:
    with pytest.raises(YamlProblem, match="not valid YAML"):
        yamlio.loads("x: !!python/object/apply:os.system ['true']\n")


def test_nul_bytes_are_refused() -> None:
    with pytest.raises(YamlProblem, match="NUL"):
        yamlio.loads(b"id: a\x00\n")


def test_invalid_utf8_names_the_byte() -> None:
    with pytest.raises(YamlProblem, match="not valid UTF-8 \\(byte 4\\)") as caught:
        yamlio.loads(b"id: \xff\n")
    assert "UTF-8" in caught.value.fix


def test_a_utf8_bom_is_accepted() -> None:
    assert yamlio.loads("\ufeffid: a\n".encode()) == {"id": "a"}


def test_alias_bomb_is_refused() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for index in range(1, 8):
        prev = chr(ord("a") + index - 1)
        name = chr(ord("a") + index)
        lines.append(f"{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]")
    with pytest.raises(YamlProblem, match="alias bomb"):
        yamlio.loads("\n".join(lines) + "\n")


def test_deep_nesting_is_refused() -> None:
    text = "x: " + "[" * 70 + "]" * 70 + "\n"
    with pytest.raises(YamlProblem, match=r"deeper than 64|nested too deeply"):
        yamlio.loads(text)


def test_check_bounded_accepts_a_normal_document() -> None:
    yamlio.check_bounded({"a": [1, 2, {"b": "c"}]})


# ------------------------------------------------------------------ dumps and writes
def test_dumps_keeps_key_order_unicode_and_block_strings() -> None:
    document = {"zeta": 1, "alpha": "é✓", "description": "line one\nline two\n", "when": "2026-11-23T09:00:00Z"}
    text = yamlio.dumps(document)
    assert text.index("zeta") < text.index("alpha") < text.index("description")
    assert "é✓" in text
    assert "description: |" in text
    assert yamlio.loads(text) == document
    assert yaml.safe_load(text)["when"] == "2026-11-23T09:00:00Z"  # quoted, so plain loaders keep a string too


def test_dumps_does_not_fold_long_lines() -> None:
    long = "word " * 100
    assert yamlio.dumps({"x": long.strip()}).count("\n") == 1


def test_atomic_write_replaces_content_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("old\n")
    yamlio.atomic_write(path, "new\n")
    assert path.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.yaml"]


def test_atomic_write_failure_keeps_the_old_file_and_cleans_up(tmp_path: Path) -> None:
    folder = tmp_path / "board"
    folder.mkdir()
    path = folder / "t.yaml"
    path.write_text("old\n")
    (folder / "t.yaml.blocker").mkdir()
    with pytest.raises(IsADirectoryError):
        yamlio.atomic_write(folder / "t.yaml.blocker", "new\n")  # rename onto a directory fails
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in folder.iterdir()) == ["t.yaml", "t.yaml.blocker"]


def test_write_yaml_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    yamlio.write_yaml(path, {"id": "a", "list": [1, 2], "nested": {"k": "v"}}, durable=False)
    assert yamlio.loads(path.read_bytes()) == {"id": "a", "list": [1, 2], "nested": {"k": "v"}}
