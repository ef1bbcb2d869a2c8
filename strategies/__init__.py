"""How a model learns: the retrieval template, the strategies as plugins, the registry.

Importing this package registers the built-in strategies: every module of the package is
imported, in sorted order (registration is deterministic), except the infrastructure
modules named in :data:`INFRASTRUCTURE` and private ones (``_name``). A strategy file
dropped into ``strategies/`` therefore registers by being there, with no other edit.
External strategies come from the ``lrbench.strategies`` entry point group. See
:mod:`strategies.registry`.
"""

from __future__ import annotations

import importlib
import pkgutil

from strategies.registry import (
    ENTRY_POINT_GROUP,
    Choice,
    IntRange,
    LogUniform,
    StrategyConfig,
    StrategyError,
    StrategyPlugin,
    StrategySpec,
    Uniform,
    available_strategies,
    get_strategy,
    make_config,
    make_plugin,
    register_strategy,
)

#: modules of this package that register no strategy: the machinery strategies are built
#: from (the contract kit, which runs strategies through the runner, is benchmarks.contract)
INFRASTRUCTURE = frozenset({"registry", "template", "losses", "model", "teacher", "weights",
                            "bninception", "devices", "buffers", "timm_trunks",
                            "tunables", "sampling", "drift", "checkpoints"})


def strategy_modules() -> list[str]:
    """The names of this package's strategy modules, sorted: every module but the
    infrastructure and private ones."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__)
                  if m.name not in INFRASTRUCTURE and not m.name.startswith("_"))


for _name in strategy_modules():  # importing a strategy module registers it
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except Exception as _exc:  # noqa: BLE001 (one broken file must not break every
        # command: recorded, warned about once, and its name refused in one line)
        from strategies.registry import record_broken_module

        record_broken_module(_name, f"{__path__[0]}/{_name}.py", _exc)

__all__ = [
    "ENTRY_POINT_GROUP", "INFRASTRUCTURE", "Choice", "IntRange", "LogUniform", "Uniform",
    "StrategyConfig", "StrategyError", "StrategyPlugin",
    "StrategySpec", "available_strategies", "get_strategy", "make_config", "make_plugin",
    "register_strategy", "strategy_modules",
]
