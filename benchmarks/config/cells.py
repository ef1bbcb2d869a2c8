"""A matrix expanded into cells (scenario x strategy x seed): each a frozen :class:`Cell` whose
hash (SHA-256 of its canonical JSON) decides whether a finished result can be reused."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import yaml
from pydantic import (
    Field,
)

from benchmarks.config.schema import (
    RUN_ONLY_SECTIONS,
    SAFE_NAME_HELP,
    CacheSpec,
    EvaluationSpec,
    MatrixConfig,
    ModelSpec,
    ScenarioSpec,
    TrainingSpec,
    _Strict,
    case_collisions,
    is_safe_name,
)
from benchmarks.errors import LrbenchError


def strategy_entry(name: str, params: dict[str, Any] | None
                   ) -> tuple[str, dict[str, Any], Any]:
    """A ``strategies`` entry split into (the registered strategy it runs: ``strategy:``, or
    its own name; its hyperparameters; its ``training:`` overrides)."""
    params = dict(params or {})
    overrides = params.pop("training", None) or {}
    return params.pop("strategy", name), params, overrides


def scenario_dict(sc: ScenarioSpec) -> dict[str, Any]:
    """A scenario as a plain, hashable description."""
    out = {"name": sc.name, **sc.model_dump(exclude={"name"})}
    if out["validation"] is None:  # left out when unset
        del out["validation"]
    return out


def resolved_hparams(strategy: str, params: dict[str, Any]) -> dict[str, Any]:
    """A strategy's hyperparameters with its defaults filled in (``fecd: {}`` and ``fecd:
    {lam: 10.0}`` are the same run, so the same cell), as plain JSON values."""
    from strategies import make_config
    from strategies.registry import StrategyError

    try:
        return make_config(strategy, params).resolved()
    except StrategyError as exc:
        raise LrbenchError(str(exc)) from None

#: the version of what a cell's hash covers; bump it when the same config would compute
#: other numbers (2: hyperparameters resolved with their defaults, training.threads, class
#: order drawn per seed, protocols resolved into their fields, per-experience loss terms)
HASH_VERSION = 2


class Cell(_Strict):
    """One (scenario, strategy, seed) of a matrix, fully resolved: the training settings
    with the strategy's overrides applied, its hyperparameters with their defaults filled
    in. Frozen: what a cell is decides its :attr:`hash`, so it never changes once made
    (leaving broken files out makes another cell, :meth:`without_files`).

    ``strategy`` is the matrix's label (it names the cell); ``plugin`` the registered
    strategy a variant runs (None: the label itself, :attr:`plugin_name`).
    """

    scenario: ScenarioSpec
    strategy: str
    plugin: str | None = None
    hparams: dict[str, Any]
    seed: int
    model: ModelSpec
    training: TrainingSpec
    evaluation: EvaluationSpec
    cache: CacheSpec
    data_root: str | None = None
    skip_files: dict[str, list[str]] | None = Field(
        None, description="--skip-corrupt: dataset -> broken files left out of this cell")

    @property
    def id(self) -> str:
        """The cell's name, and its folder in the store (unique: names hold no ``__``)."""
        return f"{self.scenario.name}__{self.strategy}__seed{self.seed}"

    @property
    def plugin_name(self) -> str:
        """The registered strategy this cell runs."""
        return self.plugin or self.strategy

    def as_dict(self) -> dict[str, Any]:
        """The cell as the plain mapping ``result.json`` stores (``config``); its keys and
        shape are those of every store written since hash version 2."""
        return {**self._body(), "id": self.id, "hash": self.hash}

    def _body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "scenario": scenario_dict(self.scenario), "strategy": self.strategy,
            "hparams": self.hparams, "seed": self.seed, "model": self.model.hashed_dump(),
            "training": self.training.hashed_dump(),
            "evaluation": self.evaluation.hashed_dump(),
            "cache": self.cache.model_dump(exclude={"dir"}),
            "data_root": self.data_root, "cache_dir": self.cache.dir,
        }
        if self.plugin is not None:  # a variant: its label names the cell, this the plugin
            out["plugin"] = self.plugin
        weights = self.model.weights_identity()
        if weights is not None:  # pretrained: true on a trunk that had no such weights
            out["weights"] = weights
        if self.skip_files:
            out["skip_files"] = self.skip_files
        return out

    @property
    def hash(self) -> str:
        """SHA-256 (first 16 hex digits) of the cell's canonical JSON and
        :data:`HASH_VERSION`: a finished result with this hash is this cell's result.

        Its id is left out, and so are the data root and the cache folder: the same data at
        another path gives the same numbers, so moving it invalidates no finished cell.
        """
        return _digest({k: v for k, v in self._body().items()
                        if k not in ("data_root", "cache_dir")})

    @property
    def first_experience_key(self) -> str:
        """What decides this cell's state at the end of its first experience, hashed: its
        :attr:`hash` with the strategy named by its plugin (a label changes no number) and
        without the hyperparameters its plugin declares inactive there
        (``inactive_in_first_experience``). Cells with one key may train that experience
        once and share it (:mod:`benchmarks.run.sharing`)."""
        from strategies import get_strategy

        idle = get_strategy(self.plugin_name).inactive_in_first_experience
        return self._key_as(self.plugin_name, {k: v for k, v in self.hparams.items()
                                               if k not in idle}, "first-experience:")

    @property
    def training_key(self) -> str:
        """What decides the state at the end of every experience's training loop,
        hashed: its :attr:`hash` with the strategy and hyperparameters it trains as
        (``StrategyPlugin.trains_as``: a drift compensation trains as the strategy it wraps,
        whatever its own hyperparameters). Cells with one key may run each loop once and
        share it (:mod:`benchmarks.run.sharing`; the contract kit checks the equality)."""
        return self._key_as(*self._trains_as(), "training:")

    @property
    def first_loop_key(self) -> str | None:
        """What decides the end state of the first experience's training loop when the
        strategy this cell trains as declares it trains that loop as another
        (``StrategyPlugin.first_loop_as``: finetune's, for most), hashed; None when it does
        not. Cells of different strategies with one key run that loop once."""
        target = first_loop_target(self._trains_as()[0])
        if target is None:
            return None
        return self._key_as(target, resolved_hparams(target, {}), "first-loop:")

    def _trains_as(self) -> tuple[str, dict[str, Any]]:
        """The strategy and hyperparameters this cell's training loops are
        (``StrategyPlugin.trains_as``)."""
        from strategies import get_strategy

        return get_strategy(self.plugin_name).cls.trains_as(self.plugin_name,
                                                            dict(self.hparams))

    def _key_as(self, strategy: str, hparams: dict[str, Any], prefix: str) -> str:
        """This cell's hash body with ``strategy`` and ``hparams`` in place of its own
        (no label, data root or cache folder: they change no number), hashed under
        ``prefix``: the keys of what cells share."""
        body = {k: v for k, v in self._body().items()
                if k not in ("data_root", "cache_dir", "plugin")}
        body["strategy"], body["hparams"] = strategy, hparams
        return _digest(body, prefix)

    def without_files(self, skips: dict[str, list[str]]) -> Cell:
        """This cell leaving the ``skips`` files out: another cell, with its own hash."""
        return self.model_copy(update={"skip_files": skips or None})

    @classmethod
    def from_stored(cls, config: dict[str, Any]) -> Cell:
        """A cell from the ``config`` mapping of a ``result.json`` (:meth:`as_dict`)."""
        data = {k: v for k, v in config.items()
                if k not in ("id", "hash", "cache_dir", "weights")}  # weights: derived
        data["cache"] = {**(data.get("cache") or {}), "dir": config.get("cache_dir")}
        return cls.model_validate(data)


def first_loop_target(name: str) -> str | None:
    """The strategy whose first training loop strategy ``name``'s is, as its own class
    declares it (``StrategyPlugin.first_loop_as``; a subclass inherits no such claim, since
    what it adds may act there); None: its own. A target that is not a registered strategy
    is a one-line :class:`~strategies.registry.StrategyError`."""
    from strategies import available_strategies, get_strategy
    from strategies.registry import StrategyError

    target = vars(get_strategy(name).cls).get("first_loop_as")
    if target is not None and target not in available_strategies():
        raise StrategyError(f"strategy {name!r} declares first_loop_as = {target!r}, not a "
                            "registered strategy: name one (finetune) or remove it")
    return target


def _digest(body: dict[str, Any], prefix: str = "") -> str:
    """SHA-256 (first 16 hex digits) of ``prefix`` and ``body``'s canonical JSON with
    :data:`HASH_VERSION` (a cell's hash, its first-experience key)."""
    text = json.dumps({**body, "hash_version": HASH_VERSION}, sort_keys=True,
                      separators=(",", ":"), default=str)
    return hashlib.sha256(f"{prefix}{text}".encode()).hexdigest()[:16]


def expand_cells(config: MatrixConfig) -> list[Cell]:
    """Every (scenario, strategy, seed) cell, fully resolved (training settings and the
    strategy's hyperparameters with their defaults). Ids are unique by construction (names
    cannot hold ``__``); a repeated scenario name or seed is a one-line error."""
    for what, names in (("scenario name", [sc.name for sc in config.scenarios]),
                        ("seed", config.seeds)):
        twice = sorted({str(n) for n in names if names.count(n) > 1})
        if twice:
            raise LrbenchError(f"{what} {', '.join(twice)} appears twice in the matrix; each "
                               f"{what} must be unique (its cells would be the same cells)")
    for name in config.strategies:
        if not is_safe_name(name):
            raise LrbenchError(f"strategy label {name!r} cannot name a cell folder: use "
                               f"{SAFE_NAME_HELP}")
    for what, names in (("scenario names", [sc.name for sc in config.scenarios]),
                        ("strategy labels", list(config.strategies))):
        same = case_collisions(names)
        if same:
            raise LrbenchError(f"{what} {', '.join(map(repr, same))} differ only in letter "
                               "case: on a case-insensitive disk (macOS, Windows) their cell "
                               "folders are one folder, and each run would overwrite the "
                               "other's results; rename one of them")
    cells = []
    for sc in config.scenarios:
        for name, params in config.strategies.items():
            base, params, overrides = strategy_entry(name, params)
            hparams = resolved_hparams(base, params)
            training = TrainingSpec.model_validate(
                {**config.training.model_dump(), **overrides})
            for seed in config.seeds:
                cells.append(Cell(
                    scenario=sc, strategy=name, plugin=base if base != name else None,
                    hparams=hparams, seed=seed, model=config.model, training=training,
                    evaluation=config.evaluation, cache=config.cache,
                    data_root=config.data_root))
    return cells


def resolved_yaml(config: MatrixConfig, run_only: bool = True) -> str:
    """The matrix as it will run (defaults filled in), for the store; ``run_only=False``
    leaves out the sections that change no number (:data:`RUN_ONLY_SECTIONS`)."""
    data = copy.deepcopy(config.model_dump(mode="json"))
    if not run_only:
        for key in RUN_ONLY_SECTIONS:
            data.pop(key, None)
    return yaml.safe_dump(data, sort_keys=False)
