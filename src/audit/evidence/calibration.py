"""Calibration of a method across groups of the population, not against itself.

A population that is compared with itself cannot see a shift: its own pairs
are, by construction, typical of it.  So calibration leaves one *group* of
members out at a time (a shape, an origin, as recorded in the members'
metadata), computes the p-values of the group's pairs (every pair with a
member in the group) against the pairs of the remaining members only, and
reports the worst group's false-positive rate at alpha and a KS test of the
pooled held-out p-values against uniform.  For exact within-pair tests the
pairs' own p-values are grouped the same way.

A method is excluded from the verdict when its held-out p-values are
anti-conservative: the pooled false-positive rate is significantly above
alpha (one-sided binomial test) or the p-values are stochastically smaller
than uniform (one-sided KS).  Pair p-values share models, so both tests are
approximate; they are a screen, not a proof.  When the population records a
single group, leaving a group out is impossible; the fallback
(leave-the-pair's-models-out, a check of the population against itself) is
labelled as such.

The smallest attainable p-value reported with a calibration is the true
floor of the test (given by the caller), never the smallest p observed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

SCREEN_LEVEL = 0.01  # level of the miscalibration screens


@dataclass(frozen=True)
class GroupRate:
    """One held-out group: its pairs' false positives at alpha."""

    grouping: str
    group: str
    n: int
    false_positives: int
    min_attainable: float

    @property
    def fpr(self) -> float:
        return self.false_positives / self.n if self.n else float("nan")

    def to_dict(self) -> dict:
        return {"grouping": self.grouping, "group": self.group, "n": self.n, "false_positives": self.false_positives,
                "fpr": self.fpr, "min_attainable": self.min_attainable}


@dataclass(frozen=True)
class Calibration:
    alpha: float
    pvalues: np.ndarray
    false_positives: int
    n: int
    fpr: float
    fpr_binomial_pvalue: float
    ks_statistic: float
    ks_pvalue: float
    ks_smaller_pvalue: float
    min_attainable: float
    calibrated: bool
    reason: str
    scheme: str = ""
    groups: tuple[GroupRate, ...] = ()

    @property
    def worst(self) -> GroupRate | None:
        rated = [g for g in self.groups if g.n]
        return max(rated, key=lambda g: (g.fpr, g.n)) if rated else None


def member_groups(architectures: Mapping[str, Mapping], sources: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """grouping -> member -> group label, from the members' recorded metadata."""
    shape = {name: "{depth} layers x {hidden} wide, {kv_heads} kv heads, MLP {mlp_width}".format(
        **{k: a.get(k, "?") for k in ("depth", "hidden", "kv_heads", "mlp_width")}) for name, a in architectures.items()}
    return {"shape": shape, "origin": {name: sources.get(name) or "unrecorded" for name in architectures}}


def leave_pair_models_out(values: np.ndarray, pairs: list[tuple[str, str]]) -> np.ndarray:
    """Each pair's empirical p-value against the pairs disjoint from it (the single-group fallback)."""
    values = np.asarray(values, dtype=np.float64)
    models = sorted({m for pair in pairs for m in pair})
    index = {m: i for i, m in enumerate(models)}
    member = np.zeros((len(pairs), len(models)), dtype=np.int64)
    for row, (a, b) in enumerate(pairs):
        member[row, index[a]] = member[row, index[b]] = 1
    disjoint = (member @ member.T) == 0
    at_least = values[None, :] >= values[:, None]
    null_sizes = disjoint.sum(axis=1)
    return np.where(null_sizes > 0, (1 + (disjoint & at_least).sum(axis=1)) / (1 + null_sizes), 1.0)


def empirical_pvalues(values: np.ndarray, null: np.ndarray, null_pairs: Sequence[tuple[str, str]]) -> tuple[np.ndarray, float]:
    """The population p-values of ``values`` against ``null`` as the audit computes them, and their floor."""
    from audit.evidence.population import effective_pairs

    floor = 1.0 / (1.0 + effective_pairs(null, list(null_pairs)))
    exceed = (np.asarray(null)[None, :] >= np.asarray(values)[:, None]).sum(axis=1)
    return np.maximum((1 + exceed) / (1 + len(null)), floor), floor


def held_out_groups(values: np.ndarray, pairs: Sequence[tuple[str, str]], groups: Mapping[str, str],
                    own_pvalues: np.ndarray | None = None, own_floor: float = 0.0) -> list[tuple[str, np.ndarray, float]]:
    """Per group: the p-values of its pairs (those with a member in it) and their floor.

    Population methods (``own_pvalues`` None): each pair against the pairs of
    the members outside the group.  Exact within-pair tests: the pairs' own p-values.
    """
    values = np.asarray(values, dtype=np.float64)
    out = []
    for group in sorted(set(groups.values())):
        inside = np.array([groups[a] == group or groups[b] == group for a, b in pairs], dtype=bool)
        if own_pvalues is not None:
            if inside.any():
                out.append((group, np.asarray(own_pvalues)[inside], own_floor))
            continue
        if not inside.any() or inside.all():
            continue
        rest = [pairs[i] for i in np.flatnonzero(~inside)]
        pvalues, floor = empirical_pvalues(values[inside], values[~inside], rest)
        out.append((group, pvalues, floor))
    return out


def calibrate(pvalues: np.ndarray, alpha: float, *, min_attainable: float, scheme: str = "",
              groups: Sequence[GroupRate] = ()) -> Calibration:
    """Screen held-out p-values of independent pairs for anti-conservative behaviour.

    ``min_attainable`` is the test's true floor (required: the smallest p observed is not a floor).
    """
    from scipy import stats

    pvalues = np.asarray(pvalues, dtype=np.float64)
    n = int(pvalues.size)
    if n == 0:
        return Calibration(alpha, pvalues, 0, 0, float("nan"), 1.0, float("nan"), 1.0, 1.0, min_attainable, False,
                           "no independent pairs to check calibration on", scheme, tuple(groups))
    hits = int(np.count_nonzero(pvalues <= alpha))
    binom = float(stats.binomtest(hits, n, alpha, alternative="greater").pvalue)
    ks = stats.kstest(pvalues, "uniform")
    ks_smaller = stats.kstest(pvalues, "uniform", alternative="greater")  # CDF above uniform: p too small
    reasons = []
    if binom < SCREEN_LEVEL:
        reasons.append(f"false-positive rate {hits}/{n} is significantly above alpha={alpha:g}")
    if ks_smaller.pvalue < SCREEN_LEVEL:
        reasons.append(f"p-values are stochastically smaller than uniform (one-sided KS p={ks_smaller.pvalue:.2g})")
    note = (f" (the smallest attainable p, {min_attainable:.3g}, exceeds alpha: the false-positive rate at alpha is "
            "untestable here)" if min_attainable > alpha else "")
    worst = max((g for g in groups if g.n), key=lambda g: (g.fpr, g.n), default=None)
    if worst is not None:
        note += f"; worst held-out group: {worst.grouping} '{worst.group}', {worst.false_positives}/{worst.n} at alpha"
    return Calibration(
        alpha=alpha,
        pvalues=pvalues,
        false_positives=hits,
        n=n,
        fpr=hits / n,
        fpr_binomial_pvalue=binom,
        ks_statistic=float(ks.statistic),
        ks_pvalue=float(ks.pvalue),
        ks_smaller_pvalue=float(ks_smaller.pvalue),
        min_attainable=min_attainable,
        calibrated=not reasons,
        reason=("; ".join(reasons) or f"{hits}/{n} held-out independent pairs at p <= {alpha:g}; no sign of "
                "anti-conservative p-values") + note,
        scheme=scheme,
        groups=tuple(groups),
    )
