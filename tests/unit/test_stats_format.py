"""How `conveyor stats` prints money: cents for real sums, the first digits for the small ones agents cost."""

from __future__ import annotations

import pytest

from conveyor.cli.stats_cmd import _money


@pytest.mark.parametrize(("value", "shown"), [
    (None, "-"), (0.0, "0.00"), (12.345, "12.35"), (1.0, "1.00"),
    (0.00048, "0.0005"), (0.0123, "0.0123"), (0.00001234, "1.2e-05"),
])
def test_small_costs_are_not_rounded_to_zero(value: float | None, shown: str) -> None:
    assert _money(value) == shown
