"""``lrbench tune``: every strategy's declared hyperparameters searched the same way, on
validation data only, through the results store.

For each strategy of a matrix, ``trials`` settings of its declared tunable hyperparameters
(``tunable`` next to its ``Config``, :mod:`strategies.registry`) are drawn by Optuna's TPE
sampler with a fixed seed. Each trial is a matrix variant labelled ``<strategy>-tNNN``
with that trial's values, run by the ordinary runner (:func:`benchmarks.runner.run_matrix`)
into a tuning store, on the scenarios' ``validation`` split (held-out train images; never
the test split). The rules:

* **Same budget for all**: every strategy with something to tune gets ``trials`` trials;
  trial 0 is the matrix's own values (its defaults), so tuning never ends below them on
  validation. A strategy with nothing to tune (finetune, joint, replay, or one whose
  tunables the matrix fixes) runs once, as a reference.
* **What is searched**: the strategy's declared tunables *that its matrix entry does not
  set*. A value the matrix gives is a stated choice (an ablation's ``lambda_est: 0``,
  replay's memory budget) and stays fixed.
* **Objective** (:data:`OBJECTIVES`): by default the final union-of-seen Recall@1 on
  validation (``final_seen`` of ``recall@1``), mean over seeds of the mean over the
  matrix's scenarios; a trial with a failed cell or an undefined value is a failed trial,
  never chosen. Ties go to the earlier trial.
* **Resumable and deterministic**: the study is rebuilt on every call by asking the seeded
  sampler again and telling it each finished trial's value read back from the store, in
  trial order; the same seed and history ask for the same values, whose cells have the
  same config hash, so finished trials are reused and a second call trains nothing.
* **The first experience once**: what a strategy declares inactive in the first experience
  (``inactive_in_first_experience``: the weights of terms that need a teacher; the contract
  kit checks each name) cannot change it, so a strategy's later trials on a seed resume
  from the checkpoint its first trial on that seed wrote after it (kept in
  ``<store>/first/`` during the call, removed when it ends, or by the next call after an
  interruption): the same numbers, about a sixth less training on a 6-experience stream
  (:mod:`benchmarks.runner`).

Outputs in the tuning store: ``tuning.csv`` / ``tuning.md`` (every trial, its values, the
objective's mean and 95% bootstrap CI over seeds) and ``tuned.yaml`` (the input matrix with
``validation`` removed and the chosen values filled in, for the test run).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks.config import (
    Cell,
    MatrixConfig,
    blame,
    is_safe_name,
    parse_config,
    read_matrix,
    strategy_entry,
)
from benchmarks.errors import LrbenchError

#: objective name -> (Optuna direction, what it is); each is computed per cell from the
#: chosen metric's union-of-seen curve or R matrix, on the validation split
OBJECTIVES = {
    "final_seen": ("maximize", "final value on the union of seen classes' validation images"),
    "avg_incremental_seen": ("maximize", "mean over the stream of the union-of-seen value"),
    "final_mean": ("maximize", "final mean over tasks of the per-task value"),
    "forgetting": ("minimize", "mean forgetting of the per-task value"),
}


@dataclass
class Trial:
    """One trial of one strategy: its label, searched values and objective over seeds."""

    strategy: str
    number: int
    label: str
    params: dict[str, Any]
    per_seed: dict[int, float] = field(default_factory=dict)
    status: str = "finished"
    mean: float = math.nan
    ci: tuple[float, float] = (math.nan, math.nan)
    chosen: bool = False
    #: how its values were drawn (:data:`KINDS`)
    kind: str = "default"


@dataclass
class TuneResult:
    """What :func:`tune` did: the store, every trial, the chosen values, the cells trained
    by this call (0 when everything was reused) and the files written."""

    store: Path
    trials: list[Trial]
    chosen: dict[str, dict[str, Any]]
    trained: int
    files: list[Path]
    #: for every continuous searched value: bracketed by the trials, or at an edge
    edges: list[Edge] = field(default_factory=list)


def _distribution(space: Any) -> Any:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    from strategies.registry import Choice, IntRange

    if isinstance(space, Choice):
        return CategoricalDistribution(list(space.options))
    if isinstance(space, IntRange):
        return IntDistribution(space.low, space.high)
    return FloatDistribution(float(space.low), float(space.high), log=space.log)


def _with_validation(data: dict[str, Any], validation: float | None, source: str
                     ) -> dict[str, Any]:
    """The raw matrix with every scenario evaluated on a validation split: ``validation``
    added where a scenario lacks one, or a one-line refusal when it is not given."""
    data = copy.deepcopy(data)
    config = parse_config(data, source, registries=False)
    scenarios = []
    for raw, sc in zip(data.get("scenarios") or [], config.scenarios, strict=True):
        if sc.validation is None:
            if validation is None:
                raise LrbenchError(
                    f"{source}: scenario {sc.name!r} has no validation split, and tune never "
                    "evaluates on the test split; add 'validation: 0.2' to it, or pass "
                    "--validation 0.2")
            raw = {"protocol": raw, "validation": validation} if isinstance(raw, str) \
                else {**raw, "validation": validation}
        scenarios.append(raw)
    data["scenarios"] = scenarios
    return data


def _without_validation(data: dict[str, Any]) -> dict[str, Any]:
    """The raw matrix with every scenario's ``validation`` removed (the test run)."""
    data = copy.deepcopy(data)
    data["scenarios"] = [{k: v for k, v in sc.items() if k != "validation"}
                         if isinstance(sc, dict) else sc for sc in data.get("scenarios") or []]
    return data


def _metric_parts(metric: str, config: MatrixConfig) -> tuple[str, str | None]:
    """``recall@K`` -> ("recall", "K"), ``map_at_r`` -> ("map_at_r", None); a metric the
    matrix does not evaluate is a one-line error."""
    if metric == "map_at_r" and config.evaluation.map_at_r:
        return "map_at_r", None
    name, _, k = metric.partition("@")
    if name == "recall" and k.isdigit() and int(k) in config.evaluation.ks:
        return "recall", str(int(k))  # recall@01 is recall@1, stored under "1"
    known = [f"recall@{k}" for k in config.evaluation.ks] + (
        ["map_at_r"] if config.evaluation.map_at_r else [])
    raise LrbenchError(f"--metric {metric!r} is not evaluated by this matrix; use one of "
                       f"{', '.join(known)}")


def cell_objective(payload: dict[str, Any], objective: str, metric: tuple[str, str | None]
                   ) -> float:
    """``objective`` of one finished cell's payload (NaN when undefined)."""
    from metrics.forgetting import forgetting

    name, k = metric

    def pick(section: dict[str, Any]) -> Any:
        value = section.get(name)
        return value.get(k) if k is not None and isinstance(value, dict) else value

    if objective in ("final_seen", "avg_incremental_seen"):
        curve = np.asarray(pick(payload.get("seen") or {}) or [], dtype=float)
        if not curve.size:
            return math.nan
        return float(curve[-1] if objective == "final_seen" else curve.mean())
    r = np.asarray(pick(payload["r_matrix"]), dtype=float)
    if objective == "final_mean":
        return float(r[-1].mean())
    return float(forgetting(r)["forgetting"]) if len(r) > 1 else math.nan


def _trial_value(store: Path, cells: list[Cell], objective: str,
                 metric: tuple[str, str | None]) -> dict[int, float] | None:
    """Per seed: the objective's mean over scenarios of a trial's cells; None when a cell
    did not finish or its value is undefined (a failed trial)."""
    from benchmarks.run.store import DamagedResult, cell_dir, read_result

    by_seed: dict[int, list[float]] = {}
    for cell in cells:
        try:
            result = read_result(cell_dir(store, cell) / "result.json")
        except (OSError, DamagedResult):
            return None
        if not result or result.get("status") != "finished" \
                or result.get("config_hash") != cell.hash:
            return None
        value = cell_objective(result["payload"], objective, metric)
        if not math.isfinite(value):
            return None
        by_seed.setdefault(cell.seed, []).append(value)
    return {seed: float(np.mean(v)) for seed, v in sorted(by_seed.items())}


def _check_store(store: Path, name: str) -> None:
    """Refuse a store that holds another matrix than this tuning's (a test run's store
    must never receive validation trials)."""
    from benchmarks.config import read_yaml

    try:
        held = read_yaml(store / "matrix.yaml", "store's matrix.yaml") or {}
    except FileNotFoundError:
        return
    except OSError:
        held = {}
    if not isinstance(held, dict) or held.get("name") != name:
        raise LrbenchError(f"{str(store)!r} holds another matrix than the tuning store "
                           f"{name!r}; choose another --out")


def drop_first_experiences(store: Path) -> None:
    """Remove the store's shared first experiences, holding its lock (a run of another
    process on this store keeps its own; this call is then refused by the lock)."""
    from benchmarks.run.store import remove_first_experiences, store_lock

    if (store / "first").is_dir():
        with store_lock(store):
            remove_first_experiences(store)


#: training options every strategy can have searched beside its own hyperparameters
#: (``lrbench tune --also-tune NAME``), with their ranges; a chosen value goes into the
#: strategy's ``training:`` override in tuned.yaml
def training_tunables() -> dict[str, Any]:
    """Name -> range of the training options ``--also-tune`` accepts."""
    from strategies.registry import LogUniform

    return {"trunk_lr_mult": LogUniform(0.01, 1.0), "lr": LogUniform(1e-5, 1e-2)}


#: what the trials of a strategy are, in order: its matrix values, a space-filling start,
#: then Optuna's TPE; ``extend`` trials move a best value at an edge outward
KINDS = ("default", "sobol", "tpe", "extend")


def label_seed(seed: int, label: str) -> int:
    """The sampler seed of one strategy's search: derived from ``--seed`` and its label, so
    every strategy gets its own space-filling points and TPE draws (one seed for all would
    give every strategy the same quantiles of its ranges)."""
    digest = hashlib.sha256(f"{seed}:{label}".encode()).hexdigest()
    return int(digest[:8], 16)


def sobol_points(spaces: dict[str, Any], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` points of a scrambled Sobol sequence over ``spaces`` (name -> range), mapped
    to each range (log ranges uniformly in log space, integers and choices by equal
    strata): a start that covers every range, where random draws leave gaps."""
    from scipy.stats import qmc

    from strategies.registry import Choice, IntRange

    if n <= 0 or not spaces:
        return []
    with warnings.catch_warnings():  # balance needs a power of 2; the first n are still
        warnings.simplefilter("ignore")  # well spread
        u = qmc.Sobol(len(spaces), scramble=True, seed=seed).random(n)
    out = []
    for row in u:
        point: dict[str, Any] = {}
        for x, (name, space) in zip(row, spaces.items(), strict=True):
            if isinstance(space, Choice):
                point[name] = space.options[min(int(x * len(space.options)),
                                                len(space.options) - 1)]
            elif isinstance(space, IntRange):
                point[name] = min(space.low + int(x * (space.high - space.low + 1)), space.high)
            elif space.log:
                point[name] = float(math.exp(math.log(space.low) + x * (
                    math.log(space.high) - math.log(space.low))))
            else:
                point[name] = float(space.low + x * (space.high - space.low))
        out.append(point)
    return out


@dataclass
class Edge:
    """Where one searched value's best lies among the values tried (:func:`edges`)."""

    strategy: str
    param: str
    best: Any
    low: Any
    high: Any
    #: ``low`` / ``high``: the best is the smallest / largest value tried; ``single``: only
    #: one value was tried; None: bracketed
    side: str | None
    #: why it cannot be searched further out (a range that is not continuous, a Config
    #: bound), or None
    stuck: str | None = None

    def line(self) -> str:
        """One line on what the search showed for this value."""
        name = f"{self.strategy} {self.param}"
        if self.side is None:
            return (f"{name}: the best value {self.best:.4g} lies inside the values tried "
                    f"[{self.low:.4g}, {self.high:.4g}] (bracketed)")
        if self.side == "single":
            return f"{name}: only one value ({self.best:.4g}) was tried: nothing is bracketed"
        which = "smallest" if self.side == "low" else "largest"
        text = (f"{name}: the best value {self.best:.4g} is the {which} value tried "
                f"([{self.low:.4g}, {self.high:.4g}]): the optimum may lie beyond it")
        return text + (f"; {self.stuck}" if self.stuck else
                       "; rerun with --extend-edges 10 to search further out")


def edges(trials: list[Trial], label: str, spaces: dict[str, Any],
          direction: str) -> list[Edge]:
    """For each continuous searched value of strategy ``label``: is its best trial's value
    strictly inside the values its finished trials tried, or at their smallest / largest?
    (Choices have no edge and are left out; an integer range counts like a real one.)"""
    from strategies.registry import Choice

    ok = [t for t in trials if t.strategy == label and t.status == "finished"]
    if len(ok) < 1:
        return []
    best = _best(ok, direction)
    out = []
    for name, space in spaces.items():
        if isinstance(space, Choice):
            continue
        tried = sorted({float(t.params[name]) for t in ok if name in t.params})
        value = float(best.params[name])
        side = None
        if len(tried) < 2:
            side = "single"
        elif value <= tried[0]:
            side = "low"
        elif value >= tried[-1]:
            side = "high"
        out.append(Edge(label, name, value, tried[0], tried[-1], side))
    return out


def _best(trials: list[Trial], direction: str) -> Trial:
    sign = 1.0 if direction == "maximize" else -1.0
    return max(trials, key=lambda t: (sign * t.mean, -t.number))


def extended_value(space: Any, value: float, side: str, factor: float) -> float | None:
    """``value`` moved outward past the edge ``side`` by ``factor``: a log range's value
    times or divided by ``factor``, a linear range's by ``factor - 1`` of its declared
    width; None for an integer range (not extended)."""
    from strategies.registry import IntRange

    if isinstance(space, IntRange):
        return None
    if space.log:
        return value * factor if side == "high" else value / factor
    step = (factor - 1) * (space.high - space.low)
    return value + step if side == "high" else value - step


@dataclass
class Plan:
    """One strategy label's search: what it runs, its ranges and its own sampler."""

    label: str
    base: str
    entry: dict[str, Any]
    spaces: dict[str, Any]
    study: Any
    seed: int
    n: int
    start: list[dict[str, Any]] = field(default_factory=list)

    def variant(self, params: dict[str, Any]) -> dict[str, Any]:
        """The matrix entry of a trial: its strategy values at the top, searched training
        options (``training.NAME``) in its ``training:`` override."""
        entry = {**self.entry, "strategy": self.base}
        training = dict(entry.pop("training", None) or {})
        for key, value in params.items():
            if key.startswith("training."):
                training[key.removeprefix("training.")] = value
            else:
                entry[key] = value
        if training:
            entry["training"] = training
        return entry


def tune(path: str | Path, trials: int, out: str | Path | None = None, seed: int = 0,
         objective: str = "final_seen", metric: str = "recall@1",
         validation: float | None = None, jobs: int = 1, overrides: list[str] | None = None,
         progress: bool = True, share_first: bool = True, also: list[str] | None = None,
         extend: float | None = None, extend_rounds: int = 3,
         test_seeds: list[int] | None = None) -> TuneResult:
    """Tune every strategy of the matrix file ``path`` (see the module docstring);
    ``share_first`` as :func:`~benchmarks.runner.run_matrix`'s; ``also``: training options
    (:func:`training_tunables`) searched for every strategy that trains; ``extend``: the
    factor by which a best value at the edge of what was tried is moved outward, for up
    to ``extend_rounds`` more trials of that strategy; ``test_seeds``: the seeds tuned.yaml
    gets (disjoint from the tuning seeds)."""
    try:
        import optuna
    except ImportError:
        raise LrbenchError("lrbench tune needs Optuna: pip install 'lrbench[tune]'") from None
    from benchmarks.config import expand_cells
    from benchmarks.runner import run_matrix
    from metrics.statistics import t_interval
    from strategies import get_strategy, make_config
    from strategies.registry import tunable_problems

    if trials < 1:
        raise LrbenchError(f"--trials must be at least 1, got {trials}")
    if objective not in OBJECTIVES:
        raise LrbenchError(f"unknown objective {objective!r}; use one of "
                           f"{', '.join(OBJECTIVES)}")
    if validation is not None and not 0 < validation < 1:
        raise LrbenchError(f"--validation must be a fraction between 0 and 1, got {validation}")
    if extend is not None and not (math.isfinite(extend) and extend > 1):
        raise LrbenchError(f"--extend-edges must be a factor above 1 (e.g. 10), got {extend}")
    if extend_rounds < 0:
        raise LrbenchError(f"--extend-rounds must be 0 or more, got {extend_rounds}")
    known_also = training_tunables()
    for name in also or []:
        if name not in known_also:
            raise LrbenchError(f"--also-tune {name!r}: not a training option tune can search; "
                               f"use one of {', '.join(known_also)}")
    source = str(path)
    raw = read_matrix(path, overrides)
    base_config = parse_config(raw, source, overrides=overrides)  # names, hparams checked
    overlap = sorted(set(test_seeds or ()) & set(base_config.seeds))
    if overlap:
        raise LrbenchError(f"--test-seeds {', '.join(map(str, overlap))} also tune: test "
                           "seeds must be disjoint from the tuning matrix's seeds "
                           f"{base_config.seeds}")
    tuning = _with_validation(raw, validation, source)
    metric_key = _metric_parts(metric, base_config)
    direction = OBJECTIVES[objective][0]
    name = f"{base_config.name}-tune"
    if not is_safe_name(name):  # blamed on who gave the name, before anything trains
        raise LrbenchError(f"{blame(source, overrides, 'name')}: name: {base_config.name!r} "
                           f"is too long to name its tuning store ({name!r}: at most 64 "
                           "characters); shorten it to at most 59 characters")
    store = Path(out or os.path.join("results", name))
    _check_store(store, name)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    # one study per strategy label of the matrix, each with the same trial budget and a
    # sampler seed of its own
    plans: dict[str, Plan] = {}
    for label, entry in base_config.strategies.items():
        base, params, training = strategy_entry(label, entry)
        spec = get_strategy(base)
        problems = tunable_problems(spec.cls)
        if problems:
            raise LrbenchError(f"strategy {base!r} declares an invalid tunable range: "
                               f"{problems[0]}; fix its 'tunable' declaration")
        spaces = {k: v for k, v in spec.tunables.items() if k not in params}
        if spec.cls.trains_experiences != 0:  # a strategy that never trains has no lr
            spaces.update({f"training.{k}": known_also[k] for k in also or []
                           if k not in training})
        if not is_safe_name(f"{label}-t000"):
            raise LrbenchError(f"strategy label {label!r} is too long to name its trials "
                               f"({label}-t000); shorten it to at most 59 characters")
        own = label_seed(seed, label)
        n = trials if spaces else 1
        n_start = min(n - 1, max(2, (n - 1) // 2 + 1)) if spaces else 0
        # TPE takes over once the defaults and the space-filling start are told
        study = optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(
            seed=own, n_startup_trials=n_start + 1))
        plan = Plan(label, base, dict(entry or {}), spaces, study, own, n)
        if spaces:
            defaults = make_config(base, params).model_dump()
            spec_training = base_config.training.model_copy(update=training).model_dump()
            first = {k: (spec_training[k.removeprefix("training.")] if k.startswith(
                "training.") else defaults[k]) for k in spaces}
            plan.start = [first, *sobol_points(spaces, n_start, own)]
            for point in plan.start:
                study.enqueue_trial(point)
        plans[label] = plan

    distributions = {label: {k: _distribution(v) for k, v in plan.spaces.items()}
                     for label, plan in plans.items()}
    drop_first_experiences(store)  # an interrupted call's may be older code's
    done: list[Trial] = []
    variants: dict[str, dict[str, Any]] = {}
    trained = 0

    def run_round(asked: list[tuple[Plan, Any, Trial]]) -> None:
        nonlocal trained
        config = parse_config({**tuning, "name": name, "strategies": dict(variants)}, source)
        # later trials resume from trial 0's first experience where nothing they change
        # acts in it (each strategy declares what; the contract kit checks it)
        counts = run_matrix(config, store, jobs=jobs, resume=True, progress=progress,
                            share_first=share_first, keep_first=True)
        trained += counts["finished"] + counts["failed"]
        cells = expand_cells(config)
        for plan, ask, trial in asked:
            per_seed = _trial_value(store, [c for c in cells if c.strategy == trial.label],
                                    objective, metric_key)
            if per_seed is None:
                trial.status = "failed"
                if ask is not None:
                    plan.study.tell(ask, state=optuna.trial.TrialState.FAIL)
            else:
                trial.per_seed = per_seed
                trial.mean = float(np.mean(list(per_seed.values())))
                trial.ci = t_interval(list(per_seed.values()))
                if ask is not None:
                    plan.study.tell(ask, trial.mean)
            done.append(trial)

    for number in range(trials):
        asked = []
        for label, plan in plans.items():
            if number >= plan.n:
                continue
            ask = plan.study.ask(distributions[label])
            kind = ("default" if number == 0 else "sobol" if number < len(plan.start)
                    else "tpe") if plan.spaces else "default"
            trial = Trial(label, number, f"{label}-t{number:03d}", dict(ask.params), kind=kind)
            variants[trial.label] = plan.variant(trial.params)
            asked.append((plan, ask, trial))
        if not asked:
            break
        run_round(asked)

    # a best value at the edge of what was tried: search further out, or say so
    for _ in range(extend_rounds if extend else 0):
        asked = []
        for label, plan in plans.items():
            for edge in edges(done, label, plan.spaces, direction):
                if edge.side not in ("low", "high"):
                    continue
                space = plan.spaces[edge.param]
                value = extended_value(space, edge.best, edge.side, extend)
                if value is None:
                    continue
                best = _best([t for t in done if t.strategy == label
                              and t.status == "finished"], direction)
                params = {**best.params, edge.param: value}
                if any(t.params == params for t in done if t.strategy == label):
                    continue
                try:
                    parse_config({**tuning, "name": name, "strategies": {
                        "probe": plan.variant(params)}}, source)
                except LrbenchError:
                    continue  # the Config's own bound: reported as stuck below
                number = 1 + max(t.number for t in done if t.strategy == label)
                trial = Trial(label, number, f"{label}-t{number:03d}", params, kind="extend")
                variants[trial.label] = plan.variant(params)
                asked.append((plan, None, trial))
                break  # one extension per strategy and round
        if not asked:
            break
        run_round(asked)

    drop_first_experiences(store)
    chosen: dict[str, dict[str, Any]] = {}
    for label in plans:
        ok = [t for t in done if t.strategy == label and t.status == "finished"]
        if not ok:
            raise LrbenchError(f"every trial of {label!r} failed (see {store}/cells/*/log.txt);"
                               " fix the cause and rerun the same command to resume")
        best = _best(ok, direction)
        best.chosen = True
        chosen[label] = dict(best.params)
    found = []
    for label, plan in plans.items():
        for edge in edges(done, label, plan.spaces, direction):
            if edge.side in ("low", "high"):
                value = extended_value(plan.spaces[edge.param], edge.best, edge.side,
                                       extend or 10.0)
                if value is None:
                    edge.stuck = "an integer range is not extended"
                else:
                    try:
                        parse_config({**tuning, "name": name, "strategies": {"probe": (
                            plan.variant({**chosen[label], edge.param: value}))}}, source)
                        if extend:
                            edge.stuck = (f"still at the edge after {extend_rounds} "
                                          "extension round(s): raise --extend-rounds")
                    except LrbenchError:
                        edge.stuck = "the Config allows no value further out"
            found.append(edge)
    done.sort(key=lambda t: (list(plans).index(t.strategy), t.number))
    files = _write_outputs(store, raw, base_config, done, chosen, trials, seed, objective,
                           metric, validation, source, found, test_seeds)
    return TuneResult(store, done, chosen, trained, files, found)


def _fmt(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:.4f}"


def _write_outputs(store: Path, raw: dict[str, Any], config: MatrixConfig,
                   trials: list[Trial], chosen: dict[str, dict[str, Any]], budget: int, seed: int,
                   objective: str, metric: str, validation: float | None,
                   source: str, found: list[Edge] | None = None,
                   test_seeds: list[int] | None = None) -> list[Path]:
    """``tuning.csv``, ``tuning.md`` and ``tuned.yaml`` in ``store``, written atomically."""
    import csv

    from benchmarks.run.store import atomic_write

    what = (f"{objective} of {metric} on the validation split ({OBJECTIVES[objective][1]}; "
            f"{OBJECTIVES[objective][0]}d), mean over seeds {config.seeds} of the mean over "
            f"{len(config.scenarios)} scenario(s)")
    budget_text = (f"{budget} trial(s) per strategy with something to tune (trial 0 = the "
                   "matrix's values, then a scrambled Sobol start over the declared ranges, "
                   f"then Optuna TPE; each strategy's sampler seeded from --seed {seed} and "
                   "its label)")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["strategy", "trial", "label", "kind", "params", "objective", "metric",
                     "mean", "ci_low", "ci_high", "seeds", "per_seed", "status", "chosen"])
    for t in trials:
        writer.writerow([t.strategy, t.number, t.label, t.kind,
                         json.dumps(t.params, sort_keys=True), objective, metric,
                         *(f"{v:.6g}" if math.isfinite(v) else "" for v in (t.mean, *t.ci)),
                         len(t.per_seed), json.dumps({str(k): v for k, v in t.per_seed.items()}),
                         t.status, t.chosen])
    lines = [f"# Tuning: {config.name}", "",
             f"Source matrix: `{source}`. Budget: {budget_text}. Objective: {what}. "
             "CI: 95% Student-t interval over seeds (undefined with one seed). "
             f"Chosen values are in `tuned.yaml`, for the run on the test split.", "",
             "| strategy | trial | drawn by | values | mean | 95% CI | seeds | chosen |",
             "|---|---:|---|---|---:|---|---:|:---:|"]
    for t in trials:
        values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in t.params.items()) or "(nothing to tune)"
        mean = _fmt(t.mean) if t.status == "finished" else "failed"
        lines.append(f"| {t.strategy} | {t.number} | {t.kind} | {values} | {mean} | "
                     f"[{_fmt(t.ci[0])}, {_fmt(t.ci[1])}] | {len(t.per_seed)} | "
                     f"{'**yes**' if t.chosen else ''} |")
    if found:
        lines += ["", "## Is each optimum bracketed?", "",
                  "A chosen value strictly inside the values tried is bracketed; one at the "
                  "smallest or largest tried may have its optimum further out "
                  "(`--extend-edges FACTOR` searches there).", "",
                  "| strategy | value | chosen | tried | bracketed |", "|---|---|---:|---|---|"]
        for e in found:
            status = "yes" if e.side is None else (
                f"**no**: the {'smallest' if e.side == 'low' else 'largest'} tried"
                + (f" ({e.stuck})" if e.stuck else ""))
            lines.append(f"| {e.strategy} | {e.param} | {e.best:.4g} | "
                         f"[{e.low:.4g}, {e.high:.4g}] | {status} |")
    tuned = _without_validation(raw)
    tuned["name"] = f"{config.name}-tuned"
    if test_seeds:
        tuned["seeds"] = list(test_seeds)
    tuned["tuned_on_seeds"] = list(config.seeds)
    strategies = {}
    for label, entry in (raw.get("strategies") or {}).items():
        values = chosen.get(label, {})
        merged = {**dict(entry or {}), **{k: v for k, v in values.items()
                                          if not k.startswith("training.")}}
        training = {k.removeprefix("training."): v for k, v in values.items()
                    if k.startswith("training.")}
        if training:
            merged["training"] = {**dict(merged.get("training") or {}), **training}
        strategies[label] = merged
    tuned["strategies"] = strategies
    parse_config(tuned, "tuned.yaml")  # what is written is a valid matrix
    seeds_note = (f"# Test seeds: {test_seeds}; tuned_on_seeds lists the tuning's seeds, "
                  "which lrbench run refuses to reuse.\n" if test_seeds else
                  f"# seeds are still the tuning's ({config.seeds}): give test seeds "
                  "disjoint from them (lrbench run refuses to reuse tuned_on_seeds), e.g. "
                  "--set seeds=[0,1,2,3,4], or pass --test-seeds to lrbench tune.\n")
    header = (f"# Tuned by 'lrbench tune {source}': {budget_text}.\n"
              f"# Objective: {what}.\n"
              "# Trials were evaluated on held-out train images (each scenario's validation "
              f"split{', --validation ' + str(validation) + ' where unset' if validation else ''}"
              "); validation is removed here: this matrix evaluates on the test split.\n"
              + seeds_note +
              "# Every trial: tuning.md beside the tuning store's tuned.yaml\n")
    out = [store / "tuning.csv", store / "tuning.md", store / "tuned.yaml"]
    atomic_write(out[0], buf.getvalue())
    atomic_write(out[1], "\n".join(lines) + "\n")
    atomic_write(out[2], header + yaml.safe_dump(tuned, sort_keys=False))
    return out
