"""Figures of the report, as deterministic vector SVG.

Every function takes plain arrays and returns SVG text; the report embeds it
as an image, so WeasyPrint keeps it vector.  Text is converted to paths (no
font dependency) and the SVG ids are salted with a constant so that the same
numbers always give the same bytes.
"""

from __future__ import annotations

import functools
import io
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

from audit.evidence.population import fisher_z  # noqa: E402

_STYLE = {
    "svg.fonttype": "path",
    "svg.hashsalt": "model-provenance-audit",
    "font.family": "DejaVu Sans",
    "font.size": 8.5,
    "axes.titlesize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
A_COLOUR, B_COLOUR, NULL_COLOUR, MARK_COLOUR = "#1f5f99", "#c4501b", "#8c8c8c", "#b3001b"


def _styled(draw):
    """Run a figure function under the report style, saving included (the salt applies at save time)."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs) -> str:
        with plt.rc_context(_STYLE):
            return draw(*args, **kwargs)

    return wrapper


def _svg(fig: plt.Figure) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return buffer.getvalue()


def _figure(width: float = 6.2, height: float = 2.6) -> tuple[plt.Figure, plt.Axes]:
    fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    return fig, ax


@_styled
def layer_profiles(
    profiles_a: dict[str, Sequence[float]],
    profiles_b: dict[str, Sequence[float]],
    label_a: str,
    label_b: str,
    ylabel: str,
) -> str:
    """One small panel per projection: both models' per-layer values over normalised depth."""
    names = list(profiles_a)
    fig, axes = plt.subplots(1, len(names), figsize=(6.4, 2.0), layout="constrained", sharey=True, squeeze=False)
    for ax, name in zip(axes[0], names):
        for values, label, colour in ((profiles_a[name], label_a, A_COLOUR), (profiles_b[name], label_b, B_COLOUR)):
            values = np.asarray(values, dtype=float)
            ax.plot(np.linspace(0, 1, values.size), values, marker="o", markersize=2.5, lw=1.1, color=colour, label=label)
        ax.set_title(name)
        ax.set_xlabel("normalised depth")
    axes[0][0].set_ylabel(ylabel)
    axes[0][0].legend(loc="best", fontsize=7, frameon=False)
    return _svg(fig)


@_styled
def null_histogram(
    null: Sequence[float],
    observed: float,
    xlabel: str,
    tail: tuple[float, float, str] | None = None,
) -> str:
    """The population null with the observed value marked (and the fitted tail, if any)."""
    null = np.asarray(null, dtype=float)
    fig, ax = _figure()
    ax.hist(null, bins=min(40, max(8, null.size // 4)), color=NULL_COLOUR, alpha=0.8, label=f"independent pairs (n={null.size})")
    ax.axvline(observed, color=MARK_COLOUR, lw=1.8, label=f"observed = {observed:.4g}")
    if tail is not None:
        loc, scale, transform = tail
        lo = min(null.min(), observed)
        hi = max(null.max(), observed)
        grid = np.linspace(lo, hi, 300)
        if transform == "fisher-z":
            z = fisher_z(grid)
            jacobian = 1 / (1 - np.clip(grid, -0.999999, 0.999999) ** 2)  # dz/dr diverges at |r| = 1: capped for drawing
            density = np.exp(-0.5 * ((z - loc) / scale) ** 2) / (scale * np.sqrt(2 * np.pi)) * jacobian
        else:
            density = np.exp(-0.5 * ((grid - loc) / scale) ** 2) / (scale * np.sqrt(2 * np.pi))
        width = (null.max() - null.min()) / min(40, max(8, null.size // 4)) if null.size > 1 else 1.0
        ax.plot(grid, density * null.size * width, color="black", lw=0.9, ls="--", label="fitted tail (model-based)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("pairs")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="best", fontsize=7, frameon=False)
    return _svg(fig)


@_styled
def layer_evidence(log10_pvalues: Sequence[float], xlabel: str = "layer") -> str:
    """Per-layer -log10 p (e.g. neuron matching), with the 1% line."""
    values = -np.asarray(log10_pvalues, dtype=float)
    fig, ax = _figure(height=2.2)
    ax.bar(np.arange(values.size), values, color=A_COLOUR, width=0.6)
    ax.set_xticks(np.arange(values.size))
    ax.axhline(2.0, color=MARK_COLOUR, lw=0.9, ls="--", label="p = 0.01")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("-log10 p")
    ax.set_ylim(0, max(values.max(), 2.0) * 1.25)
    ax.legend(loc="upper right", fontsize=7, frameon=False, ncols=2)
    return _svg(fig)


@_styled
def calibration_qq(pvalues: Sequence[float], alpha: float) -> str:
    """Sorted p-values of independent pairs against uniform quantiles."""
    p = np.sort(np.asarray(pvalues, dtype=float))
    expected = (np.arange(1, p.size + 1) - 0.5) / p.size
    fig, ax = _figure(width=3.0, height=3.0)
    ax.plot([0, 1], [0, 1], color=NULL_COLOUR, lw=0.9, ls="--", label="uniform")
    ax.plot(expected, p, marker="o", markersize=2.2, lw=0, color=A_COLOUR, label=f"independent pairs (n={p.size})")
    ax.axhline(alpha, color=MARK_COLOUR, lw=0.8, ls=":", label=f"alpha = {alpha:g}")
    ax.set_xlabel("uniform quantile")
    ax.set_ylabel("p-value")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=6.5, frameon=False)
    return _svg(fig)


@_styled
def similarity_heatmap(matrix: np.ndarray, labels: Sequence[str], title: str) -> str:
    """Pairwise similarity of the baseline models (and the suspects, if included)."""
    matrix = np.asarray(matrix, dtype=float)
    size = min(6.2, 1.6 + 0.22 * len(labels))
    fig, ax = plt.subplots(figsize=(size + 0.8, size), layout="constrained")
    image = ax.imshow(matrix, cmap="viridis", interpolation="nearest")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, shrink=0.8)
    return _svg(fig)


@_styled
def layer_map(evidence: np.ndarray, layers_a: Sequence[int], layers_b: Sequence[int], path: Sequence[Sequence[int]],
              label_a: str, label_b: str) -> str:
    """Evidence (-log10 p) for every layer pair of A (rows) and B (columns), with the chosen monotone map marked."""
    evidence = np.asarray(evidence, dtype=float)
    height = min(5.0, 1.4 + 0.22 * len(layers_a))
    width = min(6.2, 1.8 + 0.22 * len(layers_b))
    fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    image = ax.imshow(evidence, cmap="magma_r", interpolation="nearest", aspect="auto",
                      vmin=0.0, vmax=max(2.0, float(np.nanmax(evidence)) if evidence.size else 2.0))
    index_a = {int(v): i for i, v in enumerate(layers_a)}
    index_b = {int(v): i for i, v in enumerate(layers_b)}
    if path:
        ys = [index_a[int(i)] for i, _ in path]
        xs = [index_b[int(j)] for _, j in path]
        ax.plot(xs, ys, color="#2a9d8f", lw=1.4, marker="s", markersize=5, markerfacecolor="none", label="layer map")
        ax.legend(loc="upper right", fontsize=7, frameon=False)
    step_a, step_b = max(1, len(layers_a) // 16), max(1, len(layers_b) // 16)
    ax.set_yticks(range(0, len(layers_a), step_a), [str(v) for v in layers_a][::step_a])
    ax.set_xticks(range(0, len(layers_b), step_b), [str(v) for v in layers_b][::step_b])
    ax.set_ylabel(f"layer of {label_a}")
    ax.set_xlabel(f"layer of {label_b}")
    fig.colorbar(image, ax=ax, shrink=0.8, label="-log10 p")
    return _svg(fig)
