"""core.printable: what an agent printed keeps its words and loses every control sequence."""

from __future__ import annotations

import pytest

from conveyor.core.printable import printable, printable_data


@pytest.mark.parametrize(("raw", "clean"), [
    ("plain text, ünïcode and\ttabs\nand lines", "plain text, ünïcode and\ttabs\nand lines"),
    ("done\x00 with a NUL", "done with a NUL"),
    ("\x1b[31mred\x1b[0m and \x1b[1;4mbold\x1b[m", "red and bold"),
    ("\x1b]8;;http://127.0.0.1/x\x07a link\x1b]8;;\x07", "a link"),
    ("\x1b]0;window title\x1b\\after", "after"),
    ("\x1bP1$r0m\x1b\\dcs gone", "dcs gone"),
    ("bell\x07 and backspace\x08", "bell and backspace"),
    ("windows\r\nline and a\roverwrite", "windows\nline and aoverwrite"),
    ("\x9b2Jc1 csi\x85 next line\x9d osc\x9c", "c1 csi next line"),
    ("a lone escape \x1b", "a lone escape "),
    ("del\x7f", "del"),
])
def test_control_sequences_go_and_the_words_stay(raw: str, clean: str) -> None:
    assert printable(raw) == clean


def test_nested_result_blocks_are_cleaned_keys_and_values() -> None:
    block = {"summary": "ok\x1b[2K", "checks": [{"detail": "x\x00y"}], "cost": 0.5, "key\x07": None}
    assert printable_data(block) == {"summary": "ok", "checks": [{"detail": "xy"}], "cost": 0.5, "key": None}
