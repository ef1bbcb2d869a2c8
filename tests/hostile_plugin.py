"""Test only: a strategy whose callback calls ``sys.exit()`` (as a library it calls may).

``exiter`` trains exactly like ``finetune`` until experience ``at``, where its
``before_training_exp`` calls ``sys.exit(code)``, or with ``interrupt: true`` raises
``KeyboardInterrupt`` (no signal: the cell's own code). Subprocesses (the CLI and its
spawned workers) find it through the entry point group ``lrbench.strategies`` of the folder
:func:`install_exiter` writes; put that folder on their ``PYTHONPATH``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from avalanche.core import SupervisedPlugin

from strategies.registry import StrategyConfig, StrategyPlugin, register_strategy


@register_strategy("exiter")
class Exiter(StrategyPlugin, SupervisedPlugin):
    """Test only: fine-tuning whose callback exits the process at an experience."""

    class Config(StrategyConfig):
        at: int = 1
        code: int = 0
        interrupt: bool = False

    def before_training_exp(self, strategy, **kwargs) -> None:  # noqa: ANN001
        if strategy.experience.current_experience == self.config.at:
            if self.config.interrupt:
                raise KeyboardInterrupt
            sys.exit(self.config.code)


def install_exiter(folder: Path) -> Path:
    """A folder that makes ``exiter`` an entry-point strategy for any process with it on
    ``PYTHONPATH`` (no pip install: a module and its dist-info metadata)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__), folder / "lrbench_test_exiter.py")
    info = folder / "lrbench_test_exiter-0.0.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lrbench-test-exiter\n"
                                   "Version: 0.0.0\n")
    (info / "entry_points.txt").write_text(
        "[lrbench.strategies]\nexiter = lrbench_test_exiter:Exiter\n")
    return folder
