"""Test only: a strategy that holds its cell in the middle of a run until the test says go.

``gate`` trains exactly like ``finetune`` (same numbers for the same seed). At the start of
experience ``at`` it creates ``<dir>/started-seed<k>`` and waits until ``<dir>/release``
exists. A test that needs a run in progress (to send SIGINT, SIGTERM or kill -9) waits for
the ``started`` file: the run is then provably inside that cell, whatever the machine's
load, and nothing races a sleep against the code.

Subprocesses (the CLI and its spawned workers) find the strategy through the entry point
group ``lrbench.strategies`` of a dist-info folder written by :func:`install_gate`; put the
returned folder on their ``PYTHONPATH``. In the test process itself, importing this module
registers it (keep the registry clean with ``monkeypatch``).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from avalanche.core import SupervisedPlugin

from strategies.registry import StrategyConfig, StrategyPlugin, register_strategy

#: a wait this long means the test forgot to release the gate: fail instead of hanging
HANG_S = 1800.0


@register_strategy("gate")
class Gate(StrategyPlugin, SupervisedPlugin):
    """Test only: fine-tuning that waits at an experience until its gate is released."""

    class Config(StrategyConfig):
        dir: str
        at: int = 1

    def before_training_exp(self, strategy, **kwargs) -> None:  # noqa: ANN001
        if strategy.experience.current_experience != self.config.at:
            return
        gate = Path(self.config.dir)
        (gate / f"started-seed{strategy.seed}").touch()
        waited = 0.0
        while not (gate / "release").exists():
            if waited > HANG_S:
                raise TimeoutError(f"gate {gate} was never released")
            time.sleep(0.05)
            waited += 0.05


def install_gate(folder: Path) -> Path:
    """A folder that makes ``gate`` an entry-point strategy for any process with it on
    ``PYTHONPATH`` (no pip install: a module and its dist-info metadata)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__), folder / "lrbench_test_gate.py")
    info = folder / "lrbench_test_gate-0.0.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lrbench-test-gate\n"
                                   "Version: 0.0.0\n")
    (info / "entry_points.txt").write_text(
        "[lrbench.strategies]\ngate = lrbench_test_gate:Gate\n")
    return folder


def wait_for(path_glob: Path, proc, log: Path) -> None:  # noqa: ANN001
    """Wait until a file matching ``path_glob`` exists; fail at once if ``proc`` ends
    first (no clock involved: either the run reaches the gate or it stops). ``log`` is
    the file the process writes its stderr to (a pipe nobody reads could fill and block
    it)."""
    parent, pattern = path_glob.parent, path_glob.name
    while not list(parent.glob(pattern)):
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before "
                                 f"{pattern} appeared: {log.read_text()[-2000:]}")
        time.sleep(0.05)
