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
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks.config import (
    Cell,
    MatrixConfig,
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


@dataclass
class TuneResult:
    """What :func:`tune` did: the store, every trial, the chosen values, the cells trained
    by this call (0 when everything was reused) and the files written."""

    store: Path
    trials: list[Trial]
    chosen: dict[str, dict[str, Any]]
    trained: int
    files: list[Path]


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
        return "recall", k
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
    try:
        held = yaml.safe_load((store / "matrix.yaml").read_text()) or {}
    except FileNotFoundError:
        return
    except (OSError, yaml.YAMLError):
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


def tune(path: str | Path, trials: int, out: str | Path | None = None, seed: int = 0,
         objective: str = "final_seen", metric: str = "recall@1",
         validation: float | None = None, jobs: int = 1, overrides: list[str] | None = None,
         progress: bool = True, share_first: bool = True) -> TuneResult:
    """Tune every strategy of the matrix file ``path`` (see the module docstring);
    ``share_first`` as :func:`~benchmarks.runner.run_matrix`'s."""
    try:
        import optuna
    except ImportError:
        raise LrbenchError("lrbench tune needs Optuna: pip install 'lrbench[tune]'") from None
    from benchmarks.config import expand_cells
    from benchmarks.runner import run_matrix
    from metrics.statistics import bootstrap_ci
    from strategies import get_strategy, make_config
    from strategies.registry import tunable_problems

    if trials < 1:
        raise LrbenchError(f"--trials must be at least 1, got {trials}")
    if objective not in OBJECTIVES:
        raise LrbenchError(f"unknown objective {objective!r}; use one of "
                           f"{', '.join(OBJECTIVES)}")
    if validation is not None and not 0 < validation < 1:
        raise LrbenchError(f"--validation must be a fraction between 0 and 1, got {validation}")
    source = str(path)
    raw = read_matrix(path, overrides)
    base_config = parse_config(raw, source, overrides=overrides)  # names, hparams checked
    tuning = _with_validation(raw, validation, source)
    metric_key = _metric_parts(metric, base_config)
    direction = OBJECTIVES[objective][0]
    name = f"{base_config.name}-tune"
    store = Path(out or os.path.join("results", name))
    _check_store(store, name)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    # one study per strategy label of the matrix, each with the same trial budget
    plans: dict[str, dict[str, Any]] = {}
    for label, entry in base_config.strategies.items():
        base, params, _ = strategy_entry(label, entry)
        spec = get_strategy(base)
        problems = tunable_problems(spec.cls)
        if problems:
            raise LrbenchError(f"strategy {base!r} declares an invalid tunable range: "
                               f"{problems[0]}; fix its 'tunable' declaration")
        searched = {k: _distribution(v) for k, v in spec.tunables.items() if k not in params}
        if not is_safe_name(f"{label}-t000"):
            raise LrbenchError(f"strategy label {label!r} is too long to name its trials "
                               f"({label}-t000); shorten it to at most 59 characters")
        study = optuna.create_study(direction=direction,
                                    sampler=optuna.samplers.TPESampler(seed=seed))
        if searched:
            defaults = make_config(base, params).model_dump()
            study.enqueue_trial({k: defaults[k] for k in searched})
        plans[label] = {"base": base, "entry": dict(entry or {}), "searched": searched,
                        "study": study, "n": trials if searched else 1}

    drop_first_experiences(store)  # an interrupted call's may be older code's
    done: list[Trial] = []
    variants: dict[str, dict[str, Any]] = {}
    trained = 0
    for number in range(trials):
        asked = []
        for label, plan in plans.items():
            if number >= plan["n"]:
                continue
            ask = plan["study"].ask(plan["searched"])
            params = dict(ask.params)
            trial = Trial(label, number, f"{label}-t{number:03d}", params)
            variants[trial.label] = {**plan["entry"], **params, "strategy": plan["base"]}
            asked.append((plan, ask, trial))
        if not asked:
            break
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
                plan["study"].tell(ask, state=optuna.trial.TrialState.FAIL)
            else:
                trial.per_seed = per_seed
                trial.mean = float(np.mean(list(per_seed.values())))
                trial.ci = bootstrap_ci(list(per_seed.values()))
                plan["study"].tell(ask, trial.mean)
            done.append(trial)

    drop_first_experiences(store)
    chosen: dict[str, dict[str, Any]] = {}
    for label in plans:
        ok = [t for t in done if t.strategy == label and t.status == "finished"]
        if not ok:
            raise LrbenchError(f"every trial of {label!r} failed (see {store}/cells/*/log.txt);"
                               " fix the cause and rerun the same command to resume")
        sign = 1.0 if direction == "maximize" else -1.0
        best = max(ok, key=lambda t: (sign * t.mean, -t.number))
        best.chosen = True
        chosen[label] = dict(best.params)
    done.sort(key=lambda t: (list(plans).index(t.strategy), t.number))
    files = _write_outputs(store, raw, base_config, done, chosen, trials, seed, objective,
                           metric, validation, source)
    return TuneResult(store, done, chosen, trained, files)


def _fmt(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:.4f}"


def _write_outputs(store: Path, raw: dict[str, Any], config: MatrixConfig,
                   trials: list[Trial], chosen: dict[str, dict[str, Any]], budget: int, seed: int,
                   objective: str, metric: str, validation: float | None,
                   source: str) -> list[Path]:
    """``tuning.csv``, ``tuning.md`` and ``tuned.yaml`` in ``store``, written atomically."""
    import csv

    from benchmarks.run.store import atomic_write

    what = (f"{objective} of {metric} on the validation split ({OBJECTIVES[objective][1]}; "
            f"{OBJECTIVES[objective][0]}d), mean over seeds {config.seeds} of the mean over "
            f"{len(config.scenarios)} scenario(s)")
    budget_text = (f"{budget} trial(s) per strategy with something to tune (trial 0 = the "
                   f"matrix's values), Optuna TPE seed {seed}")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["strategy", "trial", "label", "params", "objective", "metric", "mean",
                     "ci_low", "ci_high", "seeds", "status", "chosen"])
    for t in trials:
        writer.writerow([t.strategy, t.number, t.label, json.dumps(t.params, sort_keys=True),
                         objective, metric, *(f"{v:.6g}" if math.isfinite(v) else ""
                                              for v in (t.mean, *t.ci)),
                         len(t.per_seed), t.status, t.chosen])
    lines = [f"# Tuning: {config.name}", "",
             f"Source matrix: `{source}`. Budget: {budget_text}. Objective: {what}. "
             "CI: 95% percentile bootstrap over seeds (undefined with one seed). "
             f"Chosen values are in `tuned.yaml`, for the run on the test split.", "",
             "| strategy | trial | values | mean | 95% CI | seeds | chosen |",
             "|---|---:|---|---:|---|---:|:---:|"]
    for t in trials:
        values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in t.params.items()) or "(nothing to tune)"
        mean = _fmt(t.mean) if t.status == "finished" else "failed"
        lines.append(f"| {t.strategy} | {t.number} | {values} | {mean} | "
                     f"[{_fmt(t.ci[0])}, {_fmt(t.ci[1])}] | {len(t.per_seed)} | "
                     f"{'**yes**' if t.chosen else ''} |")
    tuned = _without_validation(raw)
    tuned["name"] = f"{config.name}-tuned"
    strategies = {}
    for label, entry in (raw.get("strategies") or {}).items():
        strategies[label] = {**dict(entry or {}), **chosen.get(label, {})}
    tuned["strategies"] = strategies
    parse_config(tuned, "tuned.yaml")  # what is written is a valid matrix
    header = (f"# Tuned by 'lrbench tune {source}': {budget_text}.\n"
              f"# Objective: {what}.\n"
              "# Trials were evaluated on held-out train images (each scenario's validation "
              f"split{', --validation ' + str(validation) + ' where unset' if validation else ''}"
              "); validation is removed here: this matrix evaluates on the test split.\n"
              f"# Every trial: {store / 'tuning.md'}\n")
    out = [store / "tuning.csv", store / "tuning.md", store / "tuned.yaml"]
    atomic_write(out[0], buf.getvalue())
    atomic_write(out[1], "\n".join(lines) + "\n")
    atomic_write(out[2], header + yaml.safe_dump(tuned, sort_keys=False))
    return out
