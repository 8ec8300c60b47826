"""Text views of a population for the terminal: its members and its pairwise similarity."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from audit.baselines.population import Population
from audit.methods import REGISTRY
from audit.text import columns


def format_members(population: Population) -> str:
    lines = [f"population {population.name}: {len(population.members)} model(s), seed {population.seed}",
             population.description or "", f"digest {population.digest}"]
    header = ("name", "family", "layers", "hidden", "parameters", "fingerprints", "source")
    rows = [(m.name, str(m.architecture.get("family")), str(m.architecture.get("depth")), str(m.architecture.get("hidden")),
             f"{m.architecture.get('parameters', 0):,}", ",".join(sorted(m.fingerprints)), m.source or "-")
            for m in population.members.values()]
    lines += columns(header, rows)
    return "\n".join(line for line in lines if line) + ("\n" + format_outdated(population)).rstrip("\n")


def format_outdated(population: Population) -> str:
    """What `audit baseline refresh` must redo, or nothing when the population is current."""
    outdated = population.outdated()
    if not outdated:
        return ""
    kinds = sorted({kind for found in outdated.values() for kind in found})
    return (f"{len(outdated)} member(s) lack current {', '.join(kinds)} fingerprints (made by another version, or never): "
            f"run `audit baseline refresh {population.root} MODEL...` with their checkpoints\n")


def format_matrix(population: Population, methods: Sequence[str] | None = None) -> str:
    names = sorted(population.members)
    index = {n: i for i, n in enumerate(names)}
    blocks = []
    for method in methods or REGISTRY:
        table = population.pair_table(method)
        matrix = np.full((len(names), len(names)), np.nan)
        for (a, b), value in zip(table.pairs, table.statistics):
            matrix[index[a], index[b]] = matrix[index[b], index[a]] = value
        width = max(7, *(len(n) for n in names))
        lines = [f"{method}: {len(table.pairs)} comparable pair(s)"
                 + (f", {len(table.skipped)} not comparable" if table.skipped else ""),
                 " " * width + " " + " ".join(n[:7].rjust(7) for n in names)]
        for name, row in zip(names, matrix):
            lines.append(name.ljust(width) + " " + " ".join("      ." if np.isnan(v) else f"{v:7.3f}" for v in row))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
