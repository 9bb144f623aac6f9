"""Which task runs where and when: queue order and dependencies, routing to a tool and model with
fallbacks, tool availability, budgets, per-tool concurrency and pace, provider pauses, pricing.

May import: core, config, runner (outcome and token types), board.
"""
