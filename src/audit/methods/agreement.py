"""Agreement of two matchings made from disjoint weights, with its exact fixed-point null.

aligned-match (hidden units: input side against output side) and head-match
(attention heads: query against output, key against value) both match the
units of A to those of B twice, from weights that do not overlap, and count
the units on which the two matchings agree.  Under the stated assumption
(for independent models the second matching is the first composed with a
uniformly random permutation of B's units), the count is the number of fixed
points of a uniform random permutation (:mod:`audit.stats.fixed_points`).
Counts of independent matchings (one per layer, or several per layer from
disjoint weights) add up, and their sum has the convolution of the per-count
laws as its exact null; counts that are alternatives of one another (every
pair of MoE blocks of a layer) take a Bonferroni minimum instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from audit.methods.base import Fingerprint, Method
from audit.methods.matching import best_assignment
from audit.stats import EXACT, Null, TestResult, bonferroni_min_log10
from audit.stats.fixed_points import convolve_log_pmf, fixed_point_floor, fixed_point_log_pmf, log10_tail


@dataclass(frozen=True)
class Agreement:
    """One pair of unit sets: how many of the n units the two matchings agree on."""

    layer_a: int
    layer_b: int
    block_a: str
    block_b: str
    agreements: int
    units: int  # n: units matched (the smaller side)
    candidates: int  # m: units they were matched into (the larger side)
    matching: tuple[int, ...] | None = None  # kept when asked: the first matching, smaller side's units in order

    @property
    def log10_pvalue(self) -> float:
        return log10_tail(fixed_point_log_pmf(self.units, self.candidates), self.agreements)

    @property
    def log10_floor(self) -> float:
        return fixed_point_floor(self.units, self.candidates)

    def to_dict(self) -> dict:
        row = {"layer_a": self.layer_a, "layer_b": self.layer_b, "block_a": self.block_a, "block_b": self.block_b,
               "agreements": self.agreements, "units": self.units, "candidates": self.candidates,
               "log10_pvalue": self.log10_pvalue}
        return row if self.matching is None else {**row, "matching": list(self.matching)}


def count_agreement(first: np.ndarray, second: np.ndarray, layer_a: int, layer_b: int, block_a: str, block_b: str,
                    keep_matching: bool = False) -> Agreement:
    """Match the smaller side's units into the larger's by each similarity matrix (A's units down, B's
    across); count where the two assignments agree.  ``keep_matching``: record the first assignment."""
    if first.shape[0] > first.shape[1]:
        first, second = first.T, second.T
    matched = best_assignment(first)
    agree = int(np.sum(matched == best_assignment(second)))
    kept = tuple(int(j) for j in matched) if keep_matching else None
    return Agreement(layer_a, layer_b, block_a, block_b, agree, first.shape[0], first.shape[1], kept)


def joint_log_pmf(counts: Iterable[tuple[int, int]]) -> np.ndarray:
    """Exact law (natural-log pmf) of a sum of independent fixed-point counts, given each count's
    (units, candidates)."""
    log_pmf = np.zeros(1)
    for units, candidates in counts:
        log_pmf = convolve_log_pmf(log_pmf, fixed_point_log_pmf(units, candidates))
    return log_pmf


def _alternatives(found: list[Agreement]) -> bool:
    """True when some counts compete for the same units (a block of A or of B in several pairs of one layer)."""
    sides_a = [(f.layer_a, f.block_a) for f in found]
    sides_b = [(f.layer_b, f.block_b) for f in found]
    return len(set(sides_a)) != len(found) or len(set(sides_b)) != len(found)


def combine(found: list[Agreement], details: dict, assumption: str) -> TestResult:
    """The method's result from its counts: the exact convolution of the counts' laws when no two counts
    compete, else the Bonferroni minimum over the competing block pairs (``assumption`` ends the null's
    description)."""
    rows = [f.to_dict() for f in found]
    agreements, units = sum(f.agreements for f in found), sum(f.units for f in found)
    if not _alternatives(found):
        statistic = agreements / units
        log10_p = log10_tail(joint_log_pmf((f.units, f.candidates) for f in found), agreements)
        floor = sum(f.log10_floor for f in found)
        layers = len({f.layer_a for f in found})
        how = (f"exact: total agreements of {len(found)} matching pairs over {layers} layers against the convolution of "
               "their fixed-point distributions (a uniform random permutation's fixed points in each)")
    else:
        best = {}  # per layer, the block pair with the smallest p (the MoE expert that a dense MLP became)
        for f in found:
            if f.layer_a not in best or (f.log10_pvalue, -f.agreements) < (best[f.layer_a].log10_pvalue, -best[f.layer_a].agreements):
                best[f.layer_a] = f
        statistic = sum(f.agreements for f in best.values()) / sum(f.units for f in best.values())
        log10_p = bonferroni_min_log10(np.array([f.log10_pvalue for f in found]))
        floor = min(0.0, min(f.log10_floor for f in found) + math.log10(len(found)))
        how = (f"exact per block pair (fixed points of a uniform random permutation), Bonferroni minimum over the "
               f"{len(found)} block pairs tested")
    null = Null(EXACT, f"{how}; {assumption}", min_log10_pvalue=floor)
    return TestResult(statistic, log10_p, null, details={**details, "agreements": agreements, "units": units, "blocks": rows})


class LayerwiseAgreement(Method):
    """A method whose test counts agreements layer i against layer i: equal depths, and its statistic is its test's."""

    def unit_mismatch(self, a: Fingerprint, b: Fingerprint) -> str | None:
        """Why the two fingerprints' units cannot be matched at all (sizes that differ), or None."""
        return None

    def mismatch(self, a: Fingerprint, b: Fingerprint) -> str | None:
        if reason := super().mismatch(a, b) or self.unit_mismatch(a, b):
            return reason
        if a.meta["depth"] != b.meta["depth"]:
            return f"depths differ ({a.meta['depth']} vs {b.meta['depth']} layers); layer-map compares every layer pair"
        return None

    def statistic(self, a: Fingerprint, b: Fingerprint) -> float:
        return self.test(a, b, 0).statistic
