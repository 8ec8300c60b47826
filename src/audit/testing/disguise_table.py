"""The per-disguise table of the accuracy benchmark (issue 12): does every disguise get an
exact within-pair p, a ``derived`` verdict, and do the same disguises on independent models
stay quiet?

Rows are the sets of disguises that separate a pair (``pairs.json``: ``disguises``; for an
independent pair, everything applied to either model since its root).  A derived pair's
*exact p* is the smallest p among the methods that count with a within-pair exact test (the
population-floored ones cannot go below 1/(n+1), which is the point of the issue); a row
reports its weakest pair, so "at most 1e-6" in the row means every pair reached it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class PairOutcome:
    """What the benchmark saw for one labelled pair."""

    label: str  # "derived" or "independent"
    disguises: tuple[str, ...]
    exact_log10_p: float | None  # smallest counting within-pair exact p, None when none counts
    verdict: str  # verdict label at the table's alpha


@dataclass(frozen=True)
class DisguiseRow:
    disguises: tuple[str, ...]
    derived: int
    worst_exact_log10_p: float | None  # the weakest derived pair's smallest exact p, among pairs that have one
    best_exact_log10_p: float | None
    without_exact: int  # derived pairs for which no counting exact test exists
    called_derived: int
    independent: int
    false_positives: int  # independent pairs called derived
    exact_below_alpha: int  # independent pairs whose smallest exact p <= alpha (before any correction)


OTHER = ("other combinations (independent pairs only)",)


def disguise_rows(outcomes: Sequence[PairOutcome], alpha: float) -> list[DisguiseRow]:
    """One row per disguise set that some derived pair carries (undisguised pairs included), then one
    row for the independent pairs whose members' disguises combine to a set no derived pair has."""
    groups = sorted({o.disguises for o in outcomes if o.label == "derived"}, key=lambda d: (len(d), d))
    known = set(groups)
    if any(o.disguises not in known for o in outcomes):
        groups.append(OTHER)
    rows = []
    for group in groups:
        members = [o for o in outcomes if (o.disguises == group or group == OTHER and o.disguises not in known)]
        derived = [o for o in members if o.label == "derived"]
        independent = [o for o in members if o.label == "independent"]
        exact = [o.exact_log10_p for o in derived]
        have = [p for p in exact if p is not None]
        rows.append(DisguiseRow(
            disguises=group,
            derived=len(derived),
            worst_exact_log10_p=max(have) if have else None,
            best_exact_log10_p=min(have) if have else None,
            without_exact=len(exact) - len(have),
            called_derived=sum(o.verdict == "derived" for o in derived),
            independent=len(independent),
            false_positives=sum(o.verdict == "derived" for o in independent),
            exact_below_alpha=sum(o.exact_log10_p is not None and o.exact_log10_p <= math.log10(alpha) for o in independent),
        ))
    return rows


def _p(log10_p: float | None) -> str:
    return "–" if log10_p is None else f"10^{log10_p:.1f}"


def disguise_markdown(rows: Sequence[DisguiseRow], alpha: float) -> str:
    lines = [f"| disguises | derived pairs | smallest exact p, weakest pair (best pair) | derived at {alpha:g} "
             f"| disguised independent pairs | called derived at {alpha:g} | smallest exact p <= {alpha:g} |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        name = " + ".join(r.disguises) or "none (plain derivations)"
        exact = "–" if not r.derived else f"{_p(r.worst_exact_log10_p)} ({_p(r.best_exact_log10_p)})"
        if r.without_exact:
            exact += f"; none for {r.without_exact}"
        derived = f"{r.called_derived}/{r.derived}" if r.derived else "–"
        fp = f"{r.false_positives}/{r.independent}" if r.independent else "–"
        below = f"{r.exact_below_alpha}/{r.independent}" if r.independent else "–"
        lines.append(f"| {name} | {r.derived} | {exact} | {derived} | {r.independent} | {fp} | {below} |")
    return "\n".join(lines)
