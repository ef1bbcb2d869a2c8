"""``lrbench report --claims FILE``: test a paper's claims against results stores.

A claims file (YAML) lists claims, each a comparison of strategies on one summary column of
one metric, in a direction, with a margin::

    alpha: 0.05                      # optional (default 0.05)
    claims:
      - name: distillation forgets less than fine-tuning
        strategies: [fecd, dkd, mmd_kd]
        versus: finetune             # a strategy, a list, or "others"
        metric: recall@1             # recall@K or map_at_r (default recall@1)
        column: forgetting           # a report column (default final_seen)
        direction: lower             # lower | higher | within
        margin: 0.0                  # >= 0, in the column's units (default 0)
      - name: plasticity is kept
        strategies: [fecd, dkd]
        versus: finetune
        column: last_task
        direction: within
        margin: 0.05

Each (scenario, strategy, versus) is one comparison, with the report's statistics
(:mod:`reports.tables`): the paired differences d = strategy - versus over equal seeds,
their mean and 95% percentile bootstrap CI, a paired t-test, and one Holm-Bonferroni family
across every comparison of every claim. The decision rule (``docs/metrics.md``, "Claims"):

* ``lower`` (``higher`` mirrored): the paired t-test is of H0 "d = -margin" (two-sided, so
  at margin 0 it is the report's †-test). **supported**: Holm-adjusted p < alpha and mean
  d < -margin. **not supported**: the one-sided paired t-test of the opposite, d > -margin,
  has Holm-adjusted p < alpha. Otherwise, or when the tests are undefined,
  **inconclusive**.
* ``within`` (an equivalence claim, |d| <= margin): two one-sided paired t-tests (TOST),
  p = the larger. **supported**: Holm-adjusted p < alpha. **not supported**: |d| > margin
  by a one-sided test (the smaller p of d > margin and d < -margin, doubled), Holm-adjusted
  p < alpha. Otherwise **inconclusive**.

Both tests of every comparison form one Holm family, so "supported" and "not supported"
rest on evidence of the same strength (the bootstrap CI is reported, never decisive).

A claim is supported when all its comparisons are, not supported when any is not, and
inconclusive otherwise. Comparisons are made in the scenarios where both strategies ran
(merged stores may differ); a claim with none is a one-line error. A test is undefined as
in the report (fewer than 2 paired seeds, or no spread in the differences): it leaves the
Holm family and its comparison is inconclusive.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from scipy import stats

from metrics.errors import LrbenchError
from reports.load import SUMMARY_COLUMNS, Results, summaries
from reports.tables import bootstrap_ci, holm, paired_p

VERDICTS = ("supported", "not supported", "inconclusive")


class Claim(BaseModel):
    """One claim: ``strategies`` compared with ``versus`` on ``column`` of ``metric``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    strategies: list[str] = Field(min_length=1)
    versus: list[str] | Literal["others"]
    metric: str = "recall@1"
    column: Literal[SUMMARY_COLUMNS] = "final_seen"  # type: ignore[valid-type]
    direction: Literal["lower", "higher", "within"]
    margin: float = Field(0.0, ge=0)
    scenarios: list[str] | None = None

    @field_validator("strategies", "versus", "scenarios", mode="before")
    @classmethod
    def _listed(cls, value: object) -> object:
        return [value] if isinstance(value, str) and value != "others" else value


class ClaimsFile(BaseModel):
    """A whole claims file."""

    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(0.05, gt=0, lt=1)
    claims: list[Claim] = Field(min_length=1)


def load_claims(path: str | Path) -> ClaimsFile:
    """Read and validate a claims file; every problem is a one-line ``LrbenchError``."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LrbenchError(f"claims file {str(path)!r} not found") from None
    except (OSError, yaml.YAMLError) as exc:
        raise LrbenchError(f"{path}: cannot read the claims file ({' '.join(str(exc).split())})"
                           ) from None
    try:
        return ClaimsFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "(top level)"
        raise LrbenchError(f"{path}: {where}: {err['msg']} (got {err.get('input')!r}); see "
                           "docs/metrics.md, 'Claims', for the format") from None


def _unknown(what: str, name: str, known: list[str], claim: str) -> LrbenchError:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return LrbenchError(f"claim {claim!r}: {what} {name!r} is not in these results.{hint} "
                        f"Known: {', '.join(known) or '(none)'}")


def validate_claims(results: Results, claims: ClaimsFile) -> None:
    """Every strategy, scenario and metric a claim names is in ``results`` (one-line
    ``LrbenchError`` otherwise), checked before anything is written."""
    strategies = list(dict.fromkeys(results.cells.strategy))
    for claim in claims.claims:
        named = claim.strategies + ([] if claim.versus == "others" else list(claim.versus))
        for name in named:
            if name not in strategies:
                raise _unknown("strategy", name, strategies, claim.name)
        for name in claim.scenarios or []:
            if name not in results.scenarios:
                raise _unknown("scenario", name, results.scenarios, claim.name)
        if claim.metric not in results.metrics:
            raise _unknown("metric", claim.metric, results.metrics, claim.name)
        if claim.versus != "others" and set(claim.versus) & set(claim.strategies):
            raise LrbenchError(f"claim {claim.name!r}: a strategy cannot be compared with "
                               "itself; remove it from 'strategies' or 'versus'")


def _p_value(a: pd.Series, b: pd.Series, direction: str, margin: float) -> float:
    """The claim's paired test over equal seeds (NaN when undefined, as in the report)."""
    if not np.isfinite(paired_p(a, b)):
        return float("nan")  # fewer than 2 pairs, or no spread in the differences
    if direction == "lower":
        return paired_p(a + margin, b)
    if direction == "higher":
        return paired_p(a - margin, b)
    both = pd.concat([a, b], axis=1, join="inner").dropna()
    d = (both.iloc[:, 0] - both.iloc[:, 1]).to_numpy(dtype=float)
    above = stats.ttest_1samp(d + margin, 0.0, alternative="greater").pvalue  # d > -m
    below = stats.ttest_1samp(d - margin, 0.0, alternative="less").pvalue  # d < m
    return float(max(above, below))


def _p_refute(a: pd.Series, b: pd.Series, direction: str, margin: float) -> float:
    """The test of the claim's opposite over equal seeds: ``lower`` (d < -m) is refuted
    by d > -m, ``higher`` by d < m, ``within`` by |d| > m (the smaller one-sided p of
    d > m and d < -m, doubled). NaN when undefined, as :func:`_p_value`."""
    if not np.isfinite(paired_p(a, b)):
        return float("nan")
    both = pd.concat([a, b], axis=1, join="inner").dropna()
    d = (both.iloc[:, 0] - both.iloc[:, 1]).to_numpy(dtype=float)
    if direction == "lower":
        return float(stats.ttest_1samp(d + margin, 0.0, alternative="greater").pvalue)
    if direction == "higher":
        return float(stats.ttest_1samp(d - margin, 0.0, alternative="less").pvalue)
    above = stats.ttest_1samp(d - margin, 0.0, alternative="greater").pvalue  # d > m
    below = stats.ttest_1samp(d + margin, 0.0, alternative="less").pvalue  # d < -m
    return float(min(1.0, 2 * min(above, below)))


def _verdict(direction: str, margin: float, mean: float, p_adj: float,
             p_refute_adj: float, alpha: float) -> str:
    """One comparison's verdict (the rule in the module docstring): the claim's test and
    its opposite's, both Holm-adjusted in one family, so "supported" and "not supported"
    rest on evidence of the same strength."""
    if np.isfinite(p_adj) and p_adj < alpha and (
            direction == "within" or (mean < -margin if direction == "lower"
                                      else mean > margin)):
        return "supported"
    if np.isfinite(p_refute_adj) and p_refute_adj < alpha:
        return "not supported"
    return "inconclusive"


def check_claims(results: Results, claims: ClaimsFile) -> pd.DataFrame:
    """One row per comparison: claim, scenario, strategy, versus, metric, column,
    direction, margin, n_pairs, mean_strategy, mean_versus, mean_diff, ci_low, ci_high
    (of the paired differences), p_value, p_adjusted (Holm over every comparison of every
    claim), verdict, and claim_verdict (the claim's, over its comparisons)."""
    from reports.tables import variant_parents

    validate_claims(results, claims)
    variants = variant_parents(results)
    tables: dict[str, pd.DataFrame] = {}
    rows = []
    for claim in claims.claims:
        cells = tables.setdefault(claim.metric, summaries(results, claim.metric))
        for scenario in claim.scenarios or results.scenarios:
            sc = cells[cells.scenario == scenario]
            present = list(dict.fromkeys(sc.strategy))
            # "others": the scenario's strategies, not ablation variants (as in the report)
            versus = [s for s in present if s not in claim.strategies
                      and (scenario, s) not in variants] \
                if claim.versus == "others" else claim.versus
            for strategy in claim.strategies:
                for other in versus:
                    if strategy not in present or other not in present:
                        continue  # tested where both ran (a merged store may lack one)
                    a = sc[sc.strategy == strategy].set_index("seed")[claim.column].astype(float)
                    b = sc[sc.strategy == other].set_index("seed")[claim.column].astype(float)
                    both = pd.concat([a, b], axis=1, join="inner").dropna()
                    d = (both.iloc[:, 0] - both.iloc[:, 1]).to_numpy(dtype=float)
                    low, high = bootstrap_ci(d)
                    rows.append({
                        "claim": claim.name, "scenario": scenario, "strategy": strategy,
                        "versus": other, "metric": claim.metric, "column": claim.column,
                        "direction": claim.direction, "margin": claim.margin,
                        "n_pairs": len(d), "mean_strategy": both.iloc[:, 0].mean(),
                        "mean_versus": both.iloc[:, 1].mean(),  # over the paired seeds
                        "mean_diff": float(d.mean()) if len(d) else np.nan,
                        "ci_low": low, "ci_high": high,
                        "p_value": _p_value(a, b, claim.direction, claim.margin),
                        "p_refute": _p_refute(a, b, claim.direction, claim.margin)})
        if not any(r["claim"] == claim.name for r in rows):
            raise LrbenchError(f"claim {claim.name!r}: no scenario of these results has both "
                               "a claimed strategy and one it is compared with; check its "
                               "strategies, versus and scenarios")
    columns = ["claim", "scenario", "strategy", "versus", "metric", "column", "direction",
               "margin", "n_pairs", "mean_strategy", "mean_versus", "mean_diff", "ci_low",
               "ci_high", "p_value", "p_refute"]
    data = pd.DataFrame(rows, columns=columns)
    # one Holm family: every comparison's test of the claim and of its opposite
    adjusted = list(holm(pd.concat([data["p_value"], data["p_refute"]], ignore_index=True))
                    ) if len(data) else []
    data["p_adjusted"] = adjusted[:len(data)]
    data["p_refute_adjusted"] = adjusted[len(data):]
    data["verdict"] = [_verdict(r.direction, r.margin, r.mean_diff, r.p_adjusted,
                                r.p_refute_adjusted, claims.alpha) for r in data.itertuples()]
    overall = {}
    for claim in claims.claims:
        verdicts = set(data.loc[data.claim == claim.name, "verdict"])
        overall[claim.name] = ("not supported" if "not supported" in verdicts else
                               "supported" if verdicts == {"supported"} else "inconclusive")
    data["claim_verdict"] = data["claim"].map(overall)
    data.attrs["verdicts"] = overall
    data.attrs["alpha"] = claims.alpha
    return data


def _num(value: float, digits: int = 3) -> str:
    return "–" if not np.isfinite(value) else f"{value:.{digits}f}"


def _p(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.3g}"


def comparison_line(r: pd.Series) -> str:
    """One comparison in words, with the numbers behind its verdict."""
    return (f"{r['strategy']} vs {r['versus']} on {r['scenario']}: {r['column']} "
            f"{r['metric']} diff {_num(r['mean_diff'])} [95% CI {_num(r['ci_low'])}, "
            f"{_num(r['ci_high'])}], {r['n_pairs']} paired seeds, adjusted p "
            f"{_p(r['p_adjusted'])} -> {r['verdict']}")


def claims_markdown(data: pd.DataFrame) -> str:
    """The claims, their verdicts and every comparison as a Markdown page."""
    alpha, verdicts = data.attrs["alpha"], data.attrs["verdicts"]
    m = int(np.isfinite(data["p_value"].astype(float)).sum())
    family = m + int(np.isfinite(data["p_refute"].astype(float)).sum())
    lines = ["# Claims", "",
             f"Each comparison: paired differences over equal seeds (strategy − versus), "
             f"their mean and 95% percentile bootstrap CI, a paired t-test of the claim and "
             f"one of its opposite; Holm-adjusted in one family of all {family} defined "
             f"test(s) ({m} comparison(s), each tested both ways); alpha = {alpha:g}. "
             "Decision rule: docs/metrics.md, \"Claims\".", "",
             "| claim | verdict |", "|---|---|"]
    lines += [f"| {name} | **{verdict}** |" for name, verdict in verdicts.items()]
    lines += ["", "| claim | scenario | strategy | versus | measure | direction | mean diff "
              "| 95% CI | pairs | p | adjusted p | verdict |",
              "|---|---|---|---|---|---|---:|---|---:|---:|---:|---|"]
    for _, r in data.iterrows():
        how = r["direction"] + (f" (margin {r['margin']:g})" if r["margin"] else "")
        lines.append(f"| {r['claim']} | {r['scenario']} | {r['strategy']} | {r['versus']} | "
                     f"{r['column']} {r['metric']} | {how} | {_num(r['mean_diff'], 4)} | "
                     f"[{_num(r['ci_low'], 4)}, {_num(r['ci_high'], 4)}] | {r['n_pairs']} | "
                     f"{_p(r['p_value'])} | {_p(r['p_adjusted'])} | {r['verdict']} |")
    return "\n".join(lines) + "\n"


def claims_csv(data: pd.DataFrame) -> str:
    """Every comparison, one row each (empty = undefined)."""
    return data.to_csv(index=False, float_format="%.6g", lineterminator="\n")
