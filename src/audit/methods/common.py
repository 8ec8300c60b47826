"""Pieces several methods share: MLP blocks, residual width, subsample budgets, permutation tests."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, replace
from typing import Any, Mapping

import numpy as np

from audit.checkpoint import TensorView
from audit.methods.base import Fingerprint, Inapplicable, Method
from audit.roles import Layer, RoleMap
from audit.stats import TestResult, linear_permutation_test

F32_BYTES = 4
DEFAULT_RESAMPLES = 9999


def mlp_blocks(layer: Layer) -> dict[str, dict[str, TensorView]]:
    """The MLPs of a layer by block label: ``mlp`` (dense), ``expert.E``, ``shared``; roles gate/up/down."""
    blocks: dict[str, dict[str, TensorView]] = {}
    dense = {r.removeprefix("mlp."): v for r, v in layer.roles.items() if r in ("mlp.gate", "mlp.up", "mlp.down")}
    if dense:
        blocks["mlp"] = dense
    for e, expert in enumerate(layer.experts):
        blocks[f"expert.{e}"] = {r: v for r, v in expert.items() if r in ("gate", "up", "down")}
    if layer.shared_expert:
        blocks["shared"] = {r: v for r, v in layer.shared_expert.items() if r in ("gate", "up", "down")}
    return blocks


def residual_width(roles: RoleMap) -> int:
    """Width of the residual stream (read from the weights, not config.json)."""
    for layer in roles.layers:
        if "attn.q" in layer.roles:
            return layer.roles["attn.q"].shape[1]
    for name in ("embed", "head"):
        if name in roles.globals:
            return roles.globals[name].shape[1]
    raise Inapplicable("cannot tell the residual width: no attention projection and no embedding")


def shape_mismatch(a: Fingerprint, b: Fingerprint, pairing: str) -> str | None:
    """Why fingerprints of different residual width or depth cannot be paired layer by layer."""
    if a.meta["width"] != b.meta["width"]:
        return f"hidden sizes differ ({a.meta['width']} vs {b.meta['width']})"
    if a.meta["depth"] != b.meta["depth"]:
        return f"depths differ ({a.meta['depth']} vs {b.meta['depth']} layers); {pairing}"
    return None


def evenly_spaced(depth: int, count: int) -> list[int]:
    """``count`` layer indices spread evenly over ``depth`` (all when count >= depth)."""
    if count >= depth:
        return list(range(depth))
    return sorted({int(round(x)) for x in np.linspace(0, depth - 1, max(count, 1))})


def layer_budget(budget: int, bytes_per_layer: int, depth: int) -> list[int]:
    """The layers a byte budget affords, evenly spread (at least one)."""
    return evenly_spaced(depth, max(1, budget // max(bytes_per_layer, 1)))


def unit_vectors(rows: np.ndarray, what: str) -> np.ndarray:
    """Rows scaled to unit length; :class:`Inapplicable` if one is zero."""
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    if np.any(norms == 0):
        raise Inapplicable(f"{what} is constant (zero after centring), so no correlation is defined")
    return rows / norms


@dataclass(frozen=True)
class Pairing:
    """The matrix M of a linear permutation statistic T(sigma) = sum_i M[i, sigma(i)] plus details."""

    matrix: np.ndarray
    unit: str
    details: Mapping[str, Any]


class PermutationMethod(Method):
    """Methods whose statistic is a correlation that a permutation of B's units destroys."""

    n_resamples: int

    @abstractmethod
    def pairing(self, a: Fingerprint, b: Fingerprint) -> Pairing:
        """Build M (and the details to report) from two comparable fingerprints."""

    def statistic(self, a: Fingerprint, b: Fingerprint) -> float:
        return float(np.trace(self.pairing(a, b).matrix))

    def test(self, a: Fingerprint, b: Fingerprint, seed: int) -> TestResult:
        pairing = self.pairing(a, b)
        result = linear_permutation_test(pairing.matrix, n_resamples=self.n_resamples, seed=seed, unit=pairing.unit)
        return replace(result, details=pairing.details)


def sample_block(view: TensorView, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``view[rows][:, cols]`` as float64, reading only those elements."""
    width = view.shape[1]
    positions = rows[:, None] * width + cols[None, :]
    return view.sample(positions.ravel()).reshape(rows.size, cols.size)

