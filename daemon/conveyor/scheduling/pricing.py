"""Cost of an invocation: what the CLI reported, else tokens × the price list in models.yaml."""

from __future__ import annotations

from collections.abc import Mapping

from conveyor.config.models import ModelSettings
from conveyor.runner.types import Tokens


def computed_cost(model: str | None, tokens: Tokens, models: Mapping[str, ModelSettings]) -> float | None:
    """USD from the models.yaml price per million tokens; None when the model has no price."""
    if model is None:
        return None
    settings = models.get(model)
    if settings is None or settings.price is None:
        return None
    price = settings.price
    total = (tokens.input * price.input + tokens.output * price.output
             + tokens.cache_read * price.cache_read + tokens.cache_write * price.cache_write)
    return round(total / 1_000_000, 6)


def invocation_cost(reported: float | None, model: str | None, tokens: Tokens,
                    models: Mapping[str, ModelSettings]) -> tuple[float, str]:
    """(cost, source) where source is `reported`, `computed` or `unknown` (cost 0, no price known)."""
    if reported is not None:
        return round(reported, 6), "reported"
    computed = computed_cost(model, tokens, models)
    if computed is not None:
        return computed, "computed"
    return 0.0, "unknown"
