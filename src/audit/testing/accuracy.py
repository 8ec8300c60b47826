"""Accuracy of the methods on a labelled zoo: power, false positives, calibration.

On a labelled zoo (:mod:`audit.zoo`), for each method and each derivation type this computes the
AUC of -log10 p between derived and independent pairs (Mann-Whitney U), the
true-positive rate at false-positive rates of 1% and 5% (thresholds taken on
the independent pairs), the false-positive rate at alpha 0.01 and 0.05, and
a KS test of the independent pairs' p-values against uniform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from audit.zoo import LabelledPair


@dataclass(frozen=True)
class AccuracyRow:
    method: str
    group: str
    n_derived: int
    n_independent: int
    not_applicable: int
    auc: float
    tpr_at_fpr_1: float
    tpr_at_fpr_5: float
    tpr_at_alpha_01: float
    fpr_at_alpha_01: float
    fpr_at_alpha_05: float
    ks_pvalue: float


def tpr_at_fpr(positive: np.ndarray, negative: np.ndarray, fpr: float) -> float:
    """Largest TPR with at most ``fpr`` of the negatives at or above the threshold."""
    if positive.size == 0 or negative.size == 0:
        return math.nan
    allowed = int(math.floor(fpr * negative.size))
    ordered = np.sort(negative)[::-1]
    threshold = ordered[allowed] if allowed < ordered.size else -np.inf
    return float(np.mean(positive > threshold))


def accuracy_rows(
    scores: dict[str, list[float | None]], pairs: list[LabelledPair] | tuple[LabelledPair, ...]
) -> list[AccuracyRow]:
    """Per method (keys of ``scores``: log10 p per pair, None = not applicable) and per derivation."""
    rows = []
    groups = ["all", *sorted({p.derivation or "derived" for p in pairs if p.label == "derived"})]
    for method, log10_p in scores.items():
        values = np.array([math.nan if v is None else v for v in log10_p], dtype=float)
        applicable = ~np.isnan(values)
        independent = np.array([p.label == "independent" for p in pairs]) & applicable
        negative = -values[independent]
        p_independent = 10 ** values[independent]
        for group in groups:
            chosen = np.array([p.label == "derived" and (group == "all" or (p.derivation or "derived") == group) for p in pairs])
            positive = -values[chosen & applicable]
            auc = math.nan
            if positive.size and negative.size:
                u = stats.mannwhitneyu(positive, negative, alternative="two-sided").statistic
                auc = float(u / (positive.size * negative.size))
            rows.append(AccuracyRow(
                method=method,
                group=group,
                n_derived=int(positive.size),
                n_independent=int(negative.size),
                not_applicable=int(np.count_nonzero(chosen & ~applicable)),
                auc=auc,
                tpr_at_fpr_1=tpr_at_fpr(positive, negative, 0.01),
                tpr_at_fpr_5=tpr_at_fpr(positive, negative, 0.05),
                tpr_at_alpha_01=float(np.mean(positive >= 2.0)) if positive.size else math.nan,
                fpr_at_alpha_01=float(np.mean(p_independent <= 0.01)) if negative.size else math.nan,
                fpr_at_alpha_05=float(np.mean(p_independent <= 0.05)) if negative.size else math.nan,
                ks_pvalue=float(stats.kstest(p_independent, "uniform").pvalue) if negative.size else math.nan,
            ))
    return rows


def markdown_table(rows: list[AccuracyRow]) -> str:
    header = ("| method | derivation | derived | indep. | n/a | AUC | TPR@FPR1% | TPR@FPR5% | TPR@a=.01 "
              "| FPR@a=.01 | FPR@a=.05 | KS p (indep.) |")
    lines = [header, "|" + "---|" * 12]
    for r in rows:
        cells = [r.method, r.group.replace("|", "/"), str(r.n_derived), str(r.n_independent), str(r.not_applicable)]
        cells += [f"{v:.3f}" if not math.isnan(v) else "–" for v in
                  (r.auc, r.tpr_at_fpr_1, r.tpr_at_fpr_5, r.tpr_at_alpha_01, r.fpr_at_alpha_01, r.fpr_at_alpha_05)]
        cells.append(f"{r.ks_pvalue:.2g}" if not math.isnan(r.ks_pvalue) else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pivot_table(rows: list[AccuracyRow], field: str, methods: list[str]) -> str:
    """Derivation types down, methods across: one metric (e.g. ``auc``) at a glance."""
    groups = list(dict.fromkeys(r.group for r in rows))
    value = {(r.method, r.group): getattr(r, field) for r in rows}
    lines = ["| derivation | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for group in groups:
        cells = [value.get((m, group), math.nan) for m in methods]
        lines.append(f"| {group.replace('|', '/')} | " + " | ".join("–" if math.isnan(c) else f"{c:.2f}" for c in cells) + " |")
    return "\n".join(lines)
