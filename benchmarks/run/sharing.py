"""What the cells of one run share, and where, so that it is trained once.

* **The first experience**: cells that differ only in hyperparameters their strategy
  declares inactive there (a tuning's trials, an ablation's variants) have one
  :attr:`~benchmarks.config.Cell.first_experience_key`; the first of them writes its
  checkpoint after that experience (``<store>/first/<key>.pt``) and the others resume from it.
* **Every experience's training loop**: cells that train alike (a drift compensation and
  the strategy it wraps, or its own trials) have one
  :attr:`~benchmarks.config.Cell.training_key`; the first writes the end state of each loop
  (``<store>/trained/<key>/expNNN.pt``, :class:`strategies.checkpoints.SharedTraining`) and
  the others load it and run only what comes after (the drift estimate, the evaluation).
* **The first experience's training loop across strategies**: strategies whose first loop
  is finetune's (``StrategyPlugin.first_loop_as``: their terms idle there) have one
  :attr:`~benchmarks.config.Cell.first_loop_key` per seed; that loop's end state is kept
  in ``<store>/trained/<key>/exp000.pt`` without the plugins' states.

Both give the same bits as training alone (the contract kit checks every declaration).
Only where the workers share the store's disk (the local executor), for CPU cells (a
checkpoint holds every random state they use; a CUDA device's generator is not in it), and
without Avalanche's loggers (a cell's own logs would lack what it loaded). Files live for
one ``lrbench run`` call, or for a whole ``lrbench tune`` (``keep``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.config import Cell
from benchmarks.run.store import (
    first_experience_path,
    remove_first_experiences,
    shared_training_dir,
)
from strategies import get_strategy


def sharable(cell: Cell) -> bool:
    """Whether ``cell`` may share what it trains with others: on CPU only (see above)."""
    return cell.training.device == "cpu"


@dataclass
class Sharing:
    """The shared files of one run over ``store``: per cell id, its first-experience key
    (``first``) and its training key (``trains``); none when sharing is off."""

    store: Path
    keep: bool = False
    first: dict[str, str] = field(default_factory=dict)
    trains: dict[str, str] = field(default_factory=dict)
    first_loops: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._per_first = Counter(self.first.values())
        self._per_training = Counter(self.trains.values())
        self._per_first_loop = Counter(self.first_loops.values())

    @classmethod
    def plan(cls, store: Path, todo: list[Cell], on: bool, keep: bool) -> Sharing:
        """What the cells ``todo`` share (nothing unless ``on``); ``keep``: a later call
        (the tuner's next round) may use the files, so they are written for it too."""
        cells = [c for c in todo if sharable(c)] if on else []
        loops = {c.id: c.first_loop_key for c in cells}
        return cls(store, keep, {c.id: c.first_experience_key for c in cells},
                   {c.id: c.training_key for c in cells},
                   {i: k for i, k in loops.items() if k is not None})

    def args(self, cell: Cell) -> tuple[str | None, bool, str | None, bool, str | None, bool]:
        """The worker's arguments for ``cell``: the first experience's checkpoint and
        whether to write it, the training loops' folder and whether to write them, the
        folder of the first loop shared across strategies and whether to write it."""
        spec = get_strategy(cell.plugin_name)
        key, tkey = self.first.get(cell.id), self.trains.get(cell.id)
        lkey = self.first_loops.get(cell.id)
        # written only when another cell of this run, or of a later call (keep), may use it:
        # one whose strategy declares something inactive there / that trains as another
        save = key is not None and (self._per_first[key] > 1 or (
            self.keep and bool(spec.inactive_in_first_experience)))
        write = tkey is not None and (self._per_training[tkey] > 1 or (
            self.keep and spec.cls.trains_as(cell.plugin_name, {**cell.hparams})[0]
            != cell.plugin_name))
        return (str(first_experience_path(self.store, key)) if key else None, save,
                str(shared_training_dir(self.store, tkey)) if tkey else None, write,
                str(shared_training_dir(self.store, lkey)) if lkey else None,
                lkey is not None and (self._per_first_loop[lkey] > 1 or self.keep))

    def remove(self) -> None:
        """Remove the files this run's cells wrote (they only speed a run up, and are
        large)."""
        remove_first_experiences(self.store, set(self.first.values()),
                                 set(self.trains.values()) | set(self.first_loops.values()))
