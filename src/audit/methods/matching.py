"""Hidden-unit matching and the layer-wise evidence of neuron-match and robust-match.

Per layer, every pair of MLP blocks of equal shape (dense-dense, dense-expert,
expert-expert, shared experts) gets a Spearman rho and a one-sided log10 p.
A layer's evidence is its best pair, Bonferroni-corrected for the number of
pairs looked at (min-p); layers are combined by Fisher's method.  Under H0
the per-layer matchings are independent (each layer's hidden units can be
permuted on their own), so Fisher applies, and Bonferroni keeps each layer's
p-value valid however many experts there are.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from scipy.optimize import linear_sum_assignment

from audit.methods.base import Figure, Fingerprint, Inapplicable, Method
from audit.stats import PARAMETRIC, Null, TestResult, bonferroni_min_log10, fisher_log10, log10_factorial


def match_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each row of ``a`` (rows <= rows of ``b``), its partner row in ``b``.

    The assignment maximises the total cosine similarity (Hungarian-type
    solver, scipy's ``linear_sum_assignment``).  Zero rows have similarity 0.
    """
    return best_assignment(unit_rows(a) @ unit_rows(b).T)


def best_assignment(similarity: np.ndarray) -> np.ndarray:
    """For each row of ``similarity`` (rows <= columns), the column that the maximum-weight assignment gives it."""
    rows, cols = linear_sum_assignment(similarity, maximize=True)
    return cols[np.argsort(rows)]


def unit_rows(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; zero rows stay zero."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms == 0, 1.0, norms)


@dataclass(frozen=True)
class BlockEvidence:
    """One pair of MLP blocks in one layer: rho, its log10 p and the number of units matched."""

    layer: int
    block_a: str
    block_b: str
    rho: float
    log10_pvalue: float
    units: int


class LayerMatchingMethod(Method):
    """Methods whose evidence is a per-layer Spearman p-value, combined over layers."""

    combination = ("per layer: best pair of MLP blocks, Bonferroni over the pairs compared; "
                   "layers combined by Fisher's method (chi-square with 2L dof, in log space)")

    @abstractmethod
    def evidence(self, a: Fingerprint, b: Fingerprint) -> tuple[list[BlockEvidence], dict]:
        """Evidence for every comparable pair of blocks in every common layer, and details to report."""

    @abstractmethod
    def pvalue_model(self) -> str:
        """How a per-pair p-value is obtained (for the null's description)."""

    def detail(self, details: Mapping[str, Any]) -> str | None:
        """Which MoE blocks matched best, when layers have several block pairs."""
        if not any(layer["pairs_compared"] > 1 for layer in details["layers"]):
            return None
        a, b = details["most_frequent_best_pair"]
        return f"best-matching MLP blocks (most layers): A {a} ~ B {b}; Bonferroni over the pairs compared per layer"

    def figures(self, details: Mapping[str, Any]) -> list[Figure]:
        return [Figure("layer_evidence", {"log10_pvalues": [layer["log10_pvalue"] for layer in details["layers"]]},
                       f"Per-layer evidence of {self.name}: -log10 of each layer's matching p-value.")]

    def statistic(self, a: Fingerprint, b: Fingerprint) -> float:
        return self.test(a, b, 0).statistic

    def test(self, a: Fingerprint, b: Fingerprint, seed: int) -> TestResult:
        evidence, extra = self.evidence(a, b)
        if not evidence:
            raise Inapplicable("no layer has a pair of MLP blocks of equal shape")
        layers = sorted({e.layer for e in evidence})
        rows, layer_log10, floors = [], [], []
        for layer in layers:
            pairs = [e for e in evidence if e.layer == layer]
            best = min(pairs, key=lambda e: (e.log10_pvalue, -e.rho))
            corrected = bonferroni_min_log10(np.array([e.log10_pvalue for e in pairs]))
            layer_log10.append(corrected)
            floors.append(min(0.0, -log10_factorial(max(e.units for e in pairs)) + math.log10(len(pairs))))
            rows.append({"layer": layer, "best_pair": [best.block_a, best.block_b], "rho": best.rho,
                         "log10_pvalue_best": best.log10_pvalue, "pairs_compared": len(pairs),
                         "log10_pvalue": corrected, "units": best.units})
        chi2, log10_p = fisher_log10(np.array(layer_log10))
        best_blocks = [tuple(r["best_pair"]) for r in rows]
        details = {
            **extra,
            "layers": rows,
            "fisher_statistic": chi2,
            "fisher_dof": 2 * len(layers),
            "most_frequent_best_pair": list(max(set(best_blocks), key=lambda p: (best_blocks.count(p), p))),
        }
        null = Null(PARAMETRIC, f"{self.pvalue_model()}; {self.combination}",
                    min_log10_pvalue=fisher_log10(np.array(floors))[1])
        return TestResult(float(np.mean([r["rho"] for r in rows])), log10_p, null, details=details)
