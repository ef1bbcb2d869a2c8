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
  never chosen. Ties go to the earlier trial. A strategy may declare its own
  (``tuning_objective``): drift compensation's hyperparameters move stored gallery vectors
  and nothing else, so its trials are scored by the final never-re-indexed value
  (``final_nri``), since the re-embedded union value is the same for every one of them.
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
  (:mod:`benchmarks.run.sharing`; a drift compensation's trials share every loop).

Outputs in the tuning store: ``tuning.csv`` / ``tuning.md`` (every trial, its values, the
objective's mean and 95% bootstrap CI over seeds) and ``tuned.yaml`` (the input matrix with
``validation`` removed and the chosen values filled in, for the test run).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
from benchmarks.tune_outputs import _fmt, _write_outputs  # noqa: F401
from benchmarks.tune_search import (  # noqa: F401 (re-exported: benchmarks.tune.*)
    KINDS,
    OBJECTIVES,
    Edge,
    Trial,
    _best,
    _distribution,
    _with_validation,
    _without_validation,
    accepting,
    edges,
    extended_value,
    extension,
    label_seed,
    sobol_points,
    training_tunables,
)


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
    #: strategy label -> the objective its trials were scored by
    objectives: dict[str, str] = field(default_factory=dict)


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

    if objective in ("final_seen", "avg_incremental_seen", "final_nri"):
        section = payload.get("never_reindexed" if objective == "final_nri" else "seen")
        curve = np.asarray(pick(section or {}) or [], dtype=float)
        if not curve.size:
            return math.nan
        return float(curve.mean() if objective == "avg_incremental_seen" else curve[-1])
    r = np.asarray(pick(payload["r_matrix"]), dtype=float)
    if objective == "final_mean":
        return float(r[-1].mean())
    return float(forgetting(r)["forgetting"]) if len(r) > 1 else math.nan


def _cell_value(store: Path, cell: Cell, objective: str,
                metric: tuple[str, str | None]) -> tuple[float | None, str]:
    """One cell's objective from the store, or None and why it has none (one line)."""
    from benchmarks.run.store import DamagedResult, cell_dir, read_result

    try:
        result = read_result(cell_dir(store, cell) / "result.json")
    except (OSError, DamagedResult) as exc:
        return None, f"{cell.id}: result unreadable ({type(exc).__name__})"
    if not result or result.get("config_hash") != cell.hash:
        return None, f"{cell.id}: not run"
    if result.get("status") != "finished":
        why = " ".join(str(result.get("reason") or result.get("status")).split())
        return None, f"{cell.id}: {why[:160]}"
    value = cell_objective(result["payload"], objective, metric)
    if not math.isfinite(value):
        return None, f"{cell.id}: the objective is undefined"
    return value, ""


def _trial_value(store: Path, cells: list[Cell], objective: str,
                 metric: tuple[str, str | None]) -> dict[int, float] | None:
    """Per seed: the objective's mean over scenarios of a trial's cells; None when a cell
    did not finish or its value is undefined (a failed trial)."""
    by_seed: dict[int, list[float]] = {}
    for cell in cells:
        value, _ = _cell_value(store, cell, objective, metric)
        if value is None:
            return None
        by_seed.setdefault(cell.seed, []).append(value)
    return {seed: float(np.mean(v)) for seed, v in sorted(by_seed.items())}


def _trial_failure(store: Path, cells: list[Cell], objective: str,
                   metric: tuple[str, str | None]) -> str:
    """Why a trial has no value: its first cell that gave none, and why (the reason its
    result.json records for a failed cell), in one line."""
    for cell in cells:
        value, why = _cell_value(store, cell, objective, metric)
        if value is None:
            return why
    return "no value"


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
    """Remove the store's shared first experiences and training loops, holding its lock
    (another process's run on this store keeps its own: this call is refused by the lock)."""
    from benchmarks.run.store import remove_first_experiences, store_lock

    if (store / "first").is_dir() or (store / "trained").is_dir():
        with store_lock(store):
            remove_first_experiences(store)


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
    #: what its trials are scored by (the command's objective, or the strategy's own)
    objective: str = "final_seen"
    start: list[dict[str, Any]] = field(default_factory=list)

    @property
    def direction(self) -> str:
        return OBJECTIVES[self.objective][0]

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
        # a strategy that never trains has no lr; one with its own objective (drift
        # compensation) trains as the strategy it wraps, which is where a training
        # option is tuned: scored by that objective, a faster learning rate would only
        # be judged by how far the stored gallery then drifts
        if spec.cls.trains_experiences != 0 and spec.cls.tuning_objective is None:
            spaces.update({f"training.{k}": known_also[k] for k in also or []
                           if k not in training})
        if not is_safe_name(f"{label}-t000"):
            raise LrbenchError(f"strategy label {label!r} is too long to name its trials "
                               f"({label}-t000); shorten it to at most 59 characters")
        own = label_seed(seed, label)
        n = trials if spaces else 1
        n_start = min(n - 1, max(2, (n - 1) // 2 + 1)) if spaces else 0
        scored_by = spec.cls.tuning_objective or objective
        if scored_by not in OBJECTIVES:
            raise LrbenchError(f"strategy {base!r} declares tuning_objective {scored_by!r}; "
                               f"use one of {', '.join(OBJECTIVES)}")
        # TPE takes over once the defaults and the space-filling start are told
        study = optuna.create_study(direction=OBJECTIVES[scored_by][0],
                                    sampler=optuna.samplers.TPESampler(
                                        seed=own, n_startup_trials=n_start + 1))
        plan = Plan(label, base, dict(entry or {}), spaces, study, own, n, scored_by)
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
                            share_first=share_first, keep_first=True, note_stale=False)
        trained += counts["finished"] + counts["failed"]
        cells = expand_cells(config)
        for plan, ask, trial in asked:
            per_seed = _trial_value(store, [c for c in cells if c.strategy == trial.label],
                                    plan.objective, metric_key)
            if per_seed is None:
                trial.status = "failed"
                trial.reason = _trial_failure(
                    store, [c for c in cells if c.strategy == trial.label], plan.objective,
                    metric_key)
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
            for edge in edges(done, label, plan.spaces, plan.direction):
                if edge.side not in ("low", "high"):
                    continue
                best = _best([t for t in done if t.strategy == label
                              and t.status == "finished"], plan.direction)
                value = extension(plan.spaces[edge.param], edge.best, edge.side, extend,
                                  accepting(tuning, name, source, plan, best.params, edge.param))
                if value is None:
                    continue
                params = {**best.params, edge.param: value}
                if any(t.params == params for t in done if t.strategy == label):
                    continue
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
    for label, plan in plans.items():
        ok = [t for t in done if t.strategy == label and t.status == "finished"]
        if not ok:
            raise LrbenchError(f"every trial of {label!r} failed (see {store}/cells/*/log.txt);"
                               " fix the cause and rerun the same command to resume")
        best = _best(ok, plan.direction)
        best.chosen = True
        chosen[label] = dict(best.params)
    found = []
    for label, plan in plans.items():
        for edge in edges(done, label, plan.spaces, plan.direction):
            if edge.side in ("low", "high"):
                space, factor = plan.spaces[edge.param], extend or 10.0
                if extended_value(space, edge.best, edge.side, factor) is None:
                    edge.stuck = "an integer range is not extended"
                elif extension(space, edge.best, edge.side, factor, accepting(
                        tuning, name, source, plan, chosen[label], edge.param)) is None:
                    edge.stuck = "the Config allows no value further out"
                elif extend:
                    edge.stuck = (f"still at the edge after {extend_rounds} "
                                  "extension round(s): raise --extend-rounds")
            found.append(edge)
    done.sort(key=lambda t: (list(plans).index(t.strategy), t.number))
    objectives = {label: plan.objective for label, plan in plans.items()}
    files = _write_outputs(store, raw, base_config, done, chosen, trials, seed, objective,
                           metric, validation, source, found, test_seeds, objectives)
    return TuneResult(store, done, chosen, trained, files, found, objectives)


