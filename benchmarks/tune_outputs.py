"""What lrbench tune writes into its store: tuning.csv and tuning.md (every trial, the chosen one,
whether each chosen value is bracketed) and tuned.yaml (the matrix for the test run)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import yaml

from benchmarks.config import (
    MatrixConfig,
    parse_config,
)
from benchmarks.tune_search import OBJECTIVES, Edge, Trial, _without_validation


def _fmt(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:.4f}"


def _write_outputs(store: Path, raw: dict[str, Any], config: MatrixConfig,
                   trials: list[Trial], chosen: dict[str, dict[str, Any]], budget: int, seed: int,
                   objective: str, metric: str, validation: float | None,
                   source: str, found: list[Edge] | None = None,
                   test_seeds: list[int] | None = None,
                   objectives: dict[str, str] | None = None) -> list[Path]:
    """``tuning.csv``, ``tuning.md`` and ``tuned.yaml`` in ``store``, written atomically
    (``objectives``: strategy label -> the objective its trials were scored by, where a
    strategy declares its own)."""
    import csv

    from benchmarks.run.store import atomic_write

    objectives = objectives or {}
    what = (f"{objective} of {metric} on the validation split ({OBJECTIVES[objective][1]}; "
            f"{OBJECTIVES[objective][0]}d), mean over seeds {config.seeds} of the mean over "
            f"{len(config.scenarios)} scenario(s)")
    own = {label: o for label, o in objectives.items() if o != objective}
    for other in dict.fromkeys(own.values()):
        labels = ", ".join(label for label, o in own.items() if o == other)
        what += (f"; for {labels} (declared by the strategy, its tuning_objective): "
                 f"{other} of {metric} ({OBJECTIVES[other][1]}; {OBJECTIVES[other][0]}d)")
    budget_text = (f"{budget} trial(s) per strategy with something to tune (trial 0 = the "
                   "matrix's values, then a scrambled Sobol start over the declared ranges, "
                   f"then Optuna TPE; each strategy's sampler seeded from --seed {seed} and "
                   "its label)")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["strategy", "trial", "label", "kind", "params", "objective", "metric",
                     "mean", "ci_low", "ci_high", "seeds", "per_seed", "status", "chosen",
                     "reason"])
    for t in trials:
        writer.writerow([t.strategy, t.number, t.label, t.kind,
                         json.dumps(t.params, sort_keys=True),
                         objectives.get(t.strategy, objective), metric,
                         *(f"{v:.6g}" if math.isfinite(v) else "" for v in (t.mean, *t.ci)),
                         len(t.per_seed), json.dumps({str(k): v for k, v in t.per_seed.items()}),
                         t.status, t.chosen, t.reason])
    lines = [f"# Tuning: {config.name}", "",
             f"Source matrix: `{source}`. Budget: {budget_text}. Objective: {what}. "
             "CI: 95% Student-t interval over seeds (undefined with one seed). "
             f"Chosen values are in `tuned.yaml`, for the run on the test split.", "",
             "| strategy | trial | drawn by | values | objective | mean | 95% CI | seeds "
             "| chosen |",
             "|---|---:|---|---|---|---:|---|---:|:---:|"]
    for t in trials:
        values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in t.params.items()) or "(nothing to tune)"
        mean = _fmt(t.mean) if t.status == "finished" else "failed"
        lines.append(f"| {t.strategy} | {t.number} | {t.kind} | {values} | "
                     f"{objectives.get(t.strategy, objective)} | {mean} | "
                     f"[{_fmt(t.ci[0])}, {_fmt(t.ci[1])}] | {len(t.per_seed)} | "
                     f"{'**yes**' if t.chosen else ''} |")
    failed = [t for t in trials if t.status != "finished"]
    if failed:
        lines += ["", "## Failed trials", "",
                  "Never chosen; a rerun of the same command retries their cells (after the "
                  "cause is fixed, the sampler's later draws may change).", ""]
        lines += [f"* {t.label}: {t.reason or 'no value'}" for t in failed]
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
