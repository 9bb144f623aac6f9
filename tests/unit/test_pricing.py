"""Cost: the CLI's reported figure wins; otherwise tokens × models.yaml prices; unknown models cost 0, marked so."""

from __future__ import annotations

import pytest

from conveyor.config.models import ModelSettings, Price
from conveyor.runner.types import Tokens
from conveyor.scheduling.pricing import computed_cost, invocation_cost

MODELS = {
    "gpt-5": ModelSettings(tool="codex", price=Price(input=1.25, output=10.0, cache_read=0.125)),
    "sonnet": ModelSettings(tool="claude-code", price=Price(input=3.0, output=15.0, cache_read=0.3,
                                                            cache_write=3.75)),
    "unpriced": ModelSettings(tool="codex"),
}


def test_each_token_kind_has_its_own_price() -> None:
    tokens = Tokens(input=1_000_000, output=100_000, cache_read=2_000_000, cache_write=400_000)
    # 3.00 + 1.50 + 0.60 + 1.50
    assert computed_cost("sonnet", tokens, MODELS) == pytest.approx(6.6)


def test_missing_cache_write_price_counts_as_free() -> None:
    assert computed_cost("gpt-5", Tokens(cache_write=1_000_000), MODELS) == 0.0


def test_small_costs_are_rounded_to_micro_dollars() -> None:
    assert computed_cost("gpt-5", Tokens(input=1, output=1), MODELS) == pytest.approx(0.000011)


@pytest.mark.parametrize("model", [None, "unknown-model", "unpriced"])
def test_no_price_no_computed_cost(model: str | None) -> None:
    assert computed_cost(model, Tokens(input=10), MODELS) is None


def test_a_reported_cost_wins() -> None:
    assert invocation_cost(0.0123456789, "sonnet", Tokens(input=10**9), MODELS) == (0.012346, "reported")


def test_a_reported_zero_is_still_reported() -> None:
    assert invocation_cost(0.0, "sonnet", Tokens(input=10**6), MODELS) == (0.0, "reported")


def test_computed_when_nothing_is_reported() -> None:
    cost, source = invocation_cost(None, "gpt-5", Tokens(input=2_000_000, output=500_000), MODELS)
    assert (cost, source) == (pytest.approx(7.5), "computed")


def test_unknown_when_nothing_is_reported_or_priced() -> None:
    assert invocation_cost(None, "mystery", Tokens(input=5), MODELS) == (0.0, "unknown")
    assert invocation_cost(None, None, Tokens(input=5), MODELS) == (0.0, "unknown")
