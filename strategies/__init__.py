"""How a model learns: the retrieval template, the strategies as plugins, the registry.

Importing this package registers the built-in strategies (one file each); external ones
come from the ``lrbench.strategies`` entry point group. See :mod:`strategies.registry`.
"""

# built-in strategies: importing a module registers it
from strategies import (  # noqa: E402, F401, I001
    dkd, ewc, fecd, finetune, joint, l2_kd, lwf, mas, mmd_kd, replay,
)
from strategies.registry import (
    ENTRY_POINT_GROUP,
    StrategyConfig,
    StrategyError,
    StrategyPlugin,
    StrategySpec,
    available_strategies,
    get_strategy,
    make_config,
    make_plugin,
    register_strategy,
)

__all__ = [
    "ENTRY_POINT_GROUP", "StrategyConfig", "StrategyError", "StrategyPlugin", "StrategySpec",
    "available_strategies", "get_strategy", "make_config", "make_plugin", "register_strategy",
]
