"""The statistics behind the tables: Holm's adjustment, paired t-tests over seeds, the power note,
every pair of strategies compared, and the Friedman / Nemenyi rank tests of the critical-
difference diagram."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, stats

from metrics.statistics import (  # noqa: F401 (re-exported)
    CI_SEED,
    N_RESAMPLES,
    bootstrap_ci,
    describe_ci,
    mean_ci,
    t_interval,
)


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values, in the input order.

    NaN entries are undefined tests: they stay NaN and are not part of the family (m counts
    only the finite p-values). Adjusted p of the i-th smallest (0-based) of m is
    ``max_{r <= i} min(1, (m - r) p_(r))``, so adjusted p < alpha exactly where Holm's
    step-down procedure rejects at level alpha.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = len(finite)
    running = 0.0
    for rank, idx in enumerate(finite[np.argsort(p[finite], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        out[idx] = running
    return out


def paired_p(a: pd.Series, b: pd.Series) -> float:
    """Two-sided paired t-test p-value of two per-seed series (indexed by seed).

    NaN (undefined) with fewer than 2 seeds present in both, or when the paired
    differences have zero variance (also a constant non-zero difference: t would be
    infinite on a sample that shows no spread at all, so no p-value is claimed).
    """
    both = pd.concat([a, b], axis=1, join="inner").dropna()
    if len(both) < 2:
        return float("nan")
    diff = (both.iloc[:, 0] - both.iloc[:, 1]).to_numpy(dtype=float)
    if np.ptp(diff) <= 1e-12 * max(1.0, float(np.abs(diff).max())):
        return float("nan")
    return float(stats.ttest_rel(both.iloc[:, 0], both.iloc[:, 1]).pvalue)


def effect_for_power(n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """True mean paired difference, in standard deviations of the differences, that a
    two-sided paired t-test over ``n`` seeds detects with probability ``power``."""
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)

    def gap(d: float) -> float:  # the lower tail vanishes (and turns NaN) for large d
        nc = d * np.sqrt(n)
        return float(stats.nct.sf(crit, df, nc)
                     + np.nan_to_num(stats.nct.cdf(-crit, df, nc))) - power

    high = 1.0
    while gap(high) < 0:
        high *= 2
    return float(optimize.brentq(gap, 1e-9, high))


def power_note(n: int, alpha: float = 0.05, m: int = 1) -> str:
    """What a paired t-test over ``n`` paired seeds can and cannot show (one sentence or
    two, the numbers computed here), with Holm over ``m`` tests."""
    if n < 2:
        return (f"With {n} paired seed(s) no paired test is defined: no †, and no strategy "
                "can be told apart from the best (all are bold).")
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)
    text = (f"With {n} paired seeds the paired t-test has {df} degree(s) of freedom: "
            f"p < {alpha:g} needs |t| > {crit:.2f}, i.e. a mean difference above "
            f"{crit / np.sqrt(n):.2f} standard deviations of the per-seed differences")
    if m > 1:
        crit_m = stats.t.ppf(1 - alpha / (2 * m), df)
        text += (f"; with Holm over {m} tests the smallest p must be below {alpha / m:.2g} "
                 f"(|t| > {crit_m:.2f})")
    text += (f". Even a true difference of {effect_for_power(n, alpha):.1f} such standard "
             f"deviations is detected only 80% of the time (before correction). A test that "
             f"does not assume normal differences (sign-flip permutation) cannot go below "
             f"p = {2 / 2 ** n:.3g} with {n} seeds, so smaller p-values rest on that "
             "assumption. A missing † and a bold value mean \"not shown to differ\", not "
             "\"equal\".")
    return text


def _p_text(p: float) -> str:
    return "n/a" if not np.isfinite(p) else f"{p:.3g}"


def _per_seed(sc: pd.DataFrame, strategy: str, col: str) -> pd.Series:
    return sc[sc.strategy == strategy].set_index("seed")[col].astype(float)


def _n_pairs(a: pd.Series, b: pd.Series) -> int:
    return int(len(pd.concat([a, b], axis=1, join="inner").dropna()))


def pairwise_tests(values: dict[str, pd.Series], alpha: float = 0.05,
                   ci: str = "t") -> pd.DataFrame:
    """Every pair (a, b) of strategies, in row order, on one column: the paired seeds, both
    means over them, the mean difference a - b with its interval (``ci`` method, of the
    per-seed differences), the two-sided paired t-test's p, Holm-adjusted over all pairs
    (one family), and ``distinct`` (adjusted p < alpha)."""
    names = list(values)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = pd.concat([values[a], values[b]], axis=1, join="inner").dropna()
            d = (both.iloc[:, 0] - both.iloc[:, 1]).to_numpy(dtype=float)
            low, high = mean_ci(d, ci)
            rows.append({"a": a, "b": b, "n_pairs": len(d),
                         "mean_a": both.iloc[:, 0].mean(), "mean_b": both.iloc[:, 1].mean(),
                         "diff": float(d.mean()) if len(d) else np.nan,
                         "ci_low": low, "ci_high": high,
                         "p_value": paired_p(values[a], values[b])})
    out = pd.DataFrame(rows, columns=["a", "b", "n_pairs", "mean_a", "mean_b", "diff",
                                      "ci_low", "ci_high", "p_value"])
    out["p_adjusted"] = holm(out["p_value"]) if len(out) else []
    out["distinct"] = np.isfinite(out["p_adjusted"].astype(float)) & (
        out["p_adjusted"].astype(float) < alpha)
    return out


def _pair_adjusted(pairwise: pd.DataFrame, a: str, b: str) -> float:
    """The Holm-adjusted p of the pair {a, b} in ``pairwise`` (NaN when absent)."""
    row = pairwise[((pairwise.a == a) & (pairwise.b == b))
                   | ((pairwise.a == b) & (pairwise.b == a))]
    return float(row["p_adjusted"].iloc[0]) if len(row) else np.nan


@dataclass
class RankTests:
    """Friedman's test over blocks (seeds) and the Nemenyi post-hoc over mean ranks."""

    mean_ranks: pd.Series  # strategy -> mean rank (1 = best)
    friedman_stat: float
    friedman_p: float
    nemenyi: pd.DataFrame  # strategy x strategy p-values
    blocks: int
    alpha: float

    def distinct(self) -> pd.DataFrame:
        """strategy x strategy: True where Nemenyi's p < alpha."""
        return self.nemenyi < self.alpha


def rank_tests(values: dict[str, pd.Series], higher_is_better: bool = True,
               alpha: float = 0.05) -> RankTests | None:
    """Friedman test and Nemenyi post-hoc (scikit-posthocs) of the strategies' per-seed
    values, each seed a block and only seeds every strategy has; None with fewer than 3
    strategies or 2 complete blocks (the test is undefined)."""
    import scikit_posthocs as sp

    frame = pd.concat(values, axis=1).dropna()
    if frame.shape[1] < 3 or frame.shape[0] < 2:
        return None
    ranks = (frame if not higher_is_better else -frame).rank(axis=1, method="average")
    stat, p = stats.friedmanchisquare(*[frame[c].to_numpy() for c in frame.columns])
    nemenyi = sp.posthoc_nemenyi_friedman(frame if not higher_is_better else -frame)
    nemenyi.index = nemenyi.columns = list(frame.columns)
    return RankTests(ranks.mean(axis=0), float(stat), float(p), nemenyi, int(frame.shape[0]),
                     alpha)
