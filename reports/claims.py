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

``strategies: all`` names every strategy of a scenario but the ones compared with and the
ablation variants (``versus: pretrained`` with ``strategies: all``: "every method beats
the untrained model"). A claim may name a ``family`` (default ``claims``): the tests of
one family are Holm-adjusted together, and the page states each family and its size.

Each (scenario, strategy, versus) is one comparison, with the report's statistics
(:mod:`reports.tables`): the paired differences d = strategy - versus over equal seeds,
their mean and 95% Student-t interval, and **one test per comparison**, Holm-Bonferroni
adjusted within the claim's family. The decision rule (``docs/metrics.md``, "Claims"):

* ``higher`` (``lower`` mirrored) is a **one-sided** paired t-test of H1 "d > margin"
  (``lower``: d < -margin). **supported**: Holm-adjusted p < alpha.
* ``within`` (an equivalence claim, |d| <= margin): two one-sided tests (TOST), p = the
  larger; **supported**: Holm-adjusted p < alpha.
* **not supported**: the evidence goes the other way: the one-sided test of the opposite
  (d <= margin for ``higher``; |d| > margin for ``within``, the smaller one-sided p
  doubled) has p < alpha / m, m the size of the claim's family (Bonferroni). It is a
  check of the estimate's side, not a second member of the family, so testing a claim
  costs one test of power, not two.
* otherwise, or when the test is undefined, **inconclusive**.

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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from scipy import stats

from metrics.errors import LrbenchError, short_repr
from reports.load import SUMMARY_COLUMNS, Results, summaries
from reports.tables import holm, paired_p, t_interval

VERDICTS = ("supported", "not supported", "inconclusive")


class Claim(BaseModel):
    """One claim: ``strategies`` compared with ``versus`` on ``column`` of ``metric``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    strategies: list[str] | Literal["all"] = Field(min_length=1)
    versus: list[str] | Literal["others"]
    metric: str = "recall@1"
    column: Literal[SUMMARY_COLUMNS] = "final_seen"  # type: ignore[valid-type]
    direction: Literal["lower", "higher", "within"]
    margin: float = Field(0.0, ge=0, allow_inf_nan=False)
    scenarios: list[str] | None = None
    family: str = Field("claims", min_length=1, description="the Holm family of its tests")

    @field_validator("strategies", "versus", "scenarios", mode="before")
    @classmethod
    def _listed(cls, value: object) -> object:
        return [value] if isinstance(value, str) and value not in ("others", "all") else value


class ClaimsFile(BaseModel):
    """A whole claims file."""

    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(0.05, gt=0, lt=1)
    claims: list[Claim] = Field(min_length=1)

    @field_validator("claims")
    @classmethod
    def _one_name_each(cls, claims: list[Claim]) -> list[Claim]:
        names = [c.name for c in claims]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:  # their comparisons would merge into one verdict
            raise ValueError(f"the claim name {twice[0]!r} is given {names.count(twice[0])} "
                             "times; give each claim its own name")
        return claims


def load_claims(path: str | Path) -> ClaimsFile:
    """Read and validate a claims file; every problem is a one-line ``LrbenchError``."""
    from benchmarks.run.store import read_yaml

    path = Path(path)
    try:  # lrbench's one YAML reader: UTF-8, a key once, bounded (an alias bomb: one line)
        data = read_yaml(path, "claims file")
    except FileNotFoundError:
        raise LrbenchError(f"claims file {str(path)!r} not found") from None
    except OSError as exc:
        raise LrbenchError(f"{path}: cannot read the claims file ({exc.strerror or exc})"
                           ) from None
    try:
        return ClaimsFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "(top level)"
        raise LrbenchError(f"{path}: {where}: {err['msg']} (got "
                           f"{short_repr(err.get('input'))}); see docs/metrics.md, 'Claims', "
                           "for the format") from None


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
        if claim.strategies == "all" and claim.versus == "others":
            raise LrbenchError(f"claim {claim.name!r}: 'strategies: all' needs the strategies "
                               "it is compared with in 'versus', not 'others'")
        named = ([] if claim.strategies == "all" else claim.strategies) + (
            [] if claim.versus == "others" else list(claim.versus))
        for name in named:
            if name not in strategies:
                raise _unknown("strategy", name, strategies, claim.name)
        for name in claim.scenarios or []:
            if name not in results.scenarios:
                raise _unknown("scenario", name, results.scenarios, claim.name)
        if claim.metric not in results.metrics:
            raise _unknown("metric", claim.metric, results.metrics, claim.name)
        if claim.versus != "others" and claim.strategies != "all" and \
                set(claim.versus) & set(claim.strategies):
            raise LrbenchError(f"claim {claim.name!r}: a strategy cannot be compared with "
                               "itself; remove it from 'strategies' or 'versus'")


def _differences(a: pd.Series, b: pd.Series) -> np.ndarray:
    both = pd.concat([a, b], axis=1, join="inner").dropna()
    return (both.iloc[:, 0] - both.iloc[:, 1]).to_numpy(dtype=float)


def _p_value(a: pd.Series, b: pd.Series, direction: str, margin: float) -> float:
    """The claim's one test over equal seeds (NaN when undefined, as in the report): a
    one-sided paired t-test for a direction, TOST for ``within``."""
    if not np.isfinite(paired_p(a, b)):
        return float("nan")  # fewer than 2 pairs, or no spread in the differences
    d = _differences(a, b)
    if direction == "lower":
        return float(stats.ttest_1samp(d + margin, 0.0, alternative="less").pvalue)
    if direction == "higher":
        return float(stats.ttest_1samp(d - margin, 0.0, alternative="greater").pvalue)
    above = stats.ttest_1samp(d + margin, 0.0, alternative="greater").pvalue  # d > -m
    below = stats.ttest_1samp(d - margin, 0.0, alternative="less").pvalue  # d < m
    return float(max(above, below))


def _p_refute(a: pd.Series, b: pd.Series, direction: str, margin: float) -> float:
    """The one-sided test of the claim's opposite over equal seeds: ``lower`` (d < -m) by
    d > -m, ``higher`` by d < m, ``within`` by |d| > m (the smaller one-sided p of d > m
    and d < -m, doubled). Not a member of the Holm family: the verdict compares it with
    alpha / m (:func:`_verdict`). NaN when undefined, as :func:`_p_value`."""
    if not np.isfinite(paired_p(a, b)):
        return float("nan")
    d = _differences(a, b)
    if direction == "lower":
        return float(stats.ttest_1samp(d + margin, 0.0, alternative="greater").pvalue)
    if direction == "higher":
        return float(stats.ttest_1samp(d - margin, 0.0, alternative="less").pvalue)
    above = stats.ttest_1samp(d - margin, 0.0, alternative="greater").pvalue  # d > m
    below = stats.ttest_1samp(d + margin, 0.0, alternative="less").pvalue  # d < -m
    return float(min(1.0, 2 * min(above, below)))


def _verdict(p_adj: float, p_refute: float, family_size: int, alpha: float) -> str:
    """One comparison's verdict (the rule in the module docstring)."""
    if np.isfinite(p_adj) and p_adj < alpha:
        return "supported"
    if np.isfinite(p_refute) and p_refute < alpha / max(family_size, 1):
        return "not supported"
    return "inconclusive"


def check_claims(results: Results, claims: ClaimsFile) -> pd.DataFrame:
    """One row per comparison: claim, scenario, strategy, versus, metric, column,
    direction, margin, n_pairs, mean_strategy, mean_versus, mean_diff, ci_low, ci_high
    (of the paired differences), p_value, p_adjusted (Holm over every comparison of every
    claim), verdict, and claim_verdict (the claim's, over its comparisons)."""
    from reports.ablations import variant_parents

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
            named = [s for s in present if s not in versus and (scenario, s) not in variants] \
                if claim.strategies == "all" else claim.strategies
            for strategy in named:
                for other in versus:
                    if strategy not in present or other not in present:
                        continue  # tested where both ran (a merged store may lack one)
                    a = sc[sc.strategy == strategy].set_index("seed")[claim.column].astype(float)
                    b = sc[sc.strategy == other].set_index("seed")[claim.column].astype(float)
                    both = pd.concat([a, b], axis=1, join="inner").dropna()
                    d = (both.iloc[:, 0] - both.iloc[:, 1]).to_numpy(dtype=float)
                    low, high = t_interval(d)
                    rows.append({
                        "claim": claim.name, "family": claim.family,
                        "scenario": scenario, "strategy": strategy,
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
    columns = ["claim", "family", "scenario", "strategy", "versus", "metric", "column",
               "direction", "margin", "n_pairs", "mean_strategy", "mean_versus", "mean_diff",
               "ci_low", "ci_high", "p_value", "p_refute"]
    data = pd.DataFrame(rows, columns=columns)
    # Holm within each family: one test per comparison
    data["p_adjusted"] = np.nan
    sizes: dict[str, int] = {}
    for family, group in data.groupby("family", sort=False):
        data.loc[group.index, "p_adjusted"] = holm(group["p_value"])
        sizes[str(family)] = int(np.isfinite(group["p_value"].astype(float)).sum())
    data["family_size"] = data["family"].map(sizes)
    data["verdict"] = [_verdict(r.p_adjusted, r.p_refute, r.family_size, claims.alpha)
                       for r in data.itertuples()]
    overall = {}
    for claim in claims.claims:
        verdicts = set(data.loc[data.claim == claim.name, "verdict"])
        overall[claim.name] = ("not supported" if "not supported" in verdicts else
                               "supported" if verdicts == {"supported"} else "inconclusive")
    data["claim_verdict"] = data["claim"].map(overall)
    data.attrs["verdicts"] = overall
    data.attrs["families"] = sizes
    data.attrs["alpha"] = claims.alpha
    return data


def _num(value: float, digits: int = 3) -> str:
    return "–" if not np.isfinite(value) else f"{value:.{digits}f}"


def _p(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.3g}"


def comparison_line(r: pd.Series) -> str:
    """One comparison in words, with the numbers behind its verdict."""
    return (f"{r['strategy']} vs {r['versus']} on {r['scenario']}: {r['column']} "
            f"{r['metric']} diff {_num(r['mean_diff'])} [95% t CI {_num(r['ci_low'])}, "
            f"{_num(r['ci_high'])}], {r['n_pairs']} paired seeds, adjusted p "
            f"{_p(r['p_adjusted'])} -> {r['verdict']}")


def claims_markdown(data: pd.DataFrame) -> str:
    """The claims, their verdicts and every comparison as a Markdown page."""
    alpha, verdicts = data.attrs["alpha"], data.attrs["verdicts"]
    families = data.attrs.get("families", {})
    stated = "; ".join(f"`{f}`: {m} defined test(s)" for f, m in families.items())
    lines = ["# Claims", "",
             "Each comparison: paired differences over equal seeds (strategy − versus), "
             "their mean and 95% Student-t interval, and **one test**: a one-sided paired "
             "t-test for a direction (higher / lower, beyond the margin), two one-sided "
             "tests for `within`. Holm-Bonferroni within each family "
             f"({stated}); alpha = {alpha:g}. Supported: adjusted p < alpha. Not supported: "
             "the one-sided test of the opposite has p < alpha / m (m: the family's size), a "
             "check outside the family. Otherwise inconclusive. Decision rule: "
             "docs/metrics.md, \"Claims\".", "",
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
    return data.to_csv(index=False, float_format="%.12g", lineterminator="\n")
