"""Which baseline pairs may serve as the null of a suspect pair: a declared rule.

A population null speaks for a suspect pair only when its models are like
the suspects in what drives the statistic's null (family, depth, width,
vocabulary).  The rule is declared in the analysis plan and applied to the
*shapes* of the models only, before any statistic is looked at: a member is
comparable when it has the suspects' family and its depth, residual width
and vocabulary size lie within fixed ratio bands of *both* suspects'; a
baseline pair is kept when both its members are comparable.  The kept pairs,
and for every dropped pair the reason, go into the results document.

Recipes are not recorded in population format v2, so the rule cannot use
them; it says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

from audit.errors import InputError


@dataclass(frozen=True)
class Shape:
    """What the rule looks at in a model (suspect or member)."""

    family: str | None
    depth: int
    hidden: int | None
    vocab: int | None

    def describe(self) -> str:
        return (f"{self.family or 'unknown family'}, {self.depth} layers, width {self.hidden or '?'}, "
                f"vocabulary {self.vocab or '?'}")

    @classmethod
    def of_member(cls, architecture: Mapping[str, Any]) -> Shape:
        return cls(architecture.get("family"), int(architecture["depth"]), architecture.get("hidden"),
                   architecture.get("vocab"))


@dataclass(frozen=True)
class ComparabilityRule:
    """Bands are max/min ratios: 1.5 keeps 4- and 6-layer models together, never 6 and 48."""

    same_family: bool = True
    depth_ratio: float = 1.5
    width_ratio: float = 2.0
    vocab_ratio: float = 4.0

    def __post_init__(self) -> None:
        for name in ("depth_ratio", "width_ratio", "vocab_ratio"):
            if not getattr(self, name) >= 1.0:
                raise InputError(f"comparability rule: {name} must be a ratio of at least 1, not {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ComparabilityRule:
        try:
            return cls(bool(data["same_family"]), float(data["depth_ratio"]), float(data["width_ratio"]),
                       float(data["vocab_ratio"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"comparability rule is malformed ({exc})") from None

    def describe(self) -> str:
        return (f"{'same family; ' if self.same_family else ''}depth within x{self.depth_ratio:g}, residual width within "
                f"x{self.width_ratio:g}, vocabulary within x{self.vocab_ratio:g} of both suspects "
                "(recipes are not recorded in the population format, so not compared)")

    def reason(self, member: Shape, case: Shape) -> str | None:
        """Why ``member`` is not comparable to the suspect ``case`` (None when it is)."""
        if self.same_family and member.family and case.family and member.family != case.family:
            return f"family {member.family}, not {case.family}"
        for what, a, b, ratio in (("depth", member.depth, case.depth, self.depth_ratio),
                                  ("width", member.hidden, case.hidden, self.width_ratio),
                                  ("vocabulary", member.vocab, case.vocab, self.vocab_ratio)):
            if a and b and max(a, b) / min(a, b) > ratio:
                return f"{what} {a} vs {b} (band x{ratio:g})"
        return None

    def needed(self, cases: Sequence[Shape]) -> str:
        """The population that would be comparable to ``cases``, in words."""
        low, high = math.ceil(max(c.depth for c in cases) / self.depth_ratio), int(min(c.depth for c in cases) * self.depth_ratio)
        if low > high:
            return (f"two populations: no model is within x{self.depth_ratio:g} of both {min(c.depth for c in cases)} "
                    f"and {max(c.depth for c in cases)} layers (the suspects' depths)")
        text = f"independently trained models of {low}-{high} layers"
        widths = [c.hidden for c in cases if c.hidden]
        if widths:
            text += f", residual width {math.ceil(max(widths) / self.width_ratio)}-{int(min(widths) * self.width_ratio)}"
        families = sorted({c.family for c in cases if c.family})
        if self.same_family and families:
            text += f", family {'/'.join(families)}"
        return text


@dataclass(frozen=True)
class Comparable:
    """The outcome of the rule on one population table: which pairs stay, which go and why."""

    kept: tuple[int, ...]  # indices into the table's pairs
    dropped: Mapping[str, str]  # "a|b" -> reason
    members: Mapping[str, str | None]  # member -> reason it is not comparable (None: comparable)

    def to_dict(self, pairs: Sequence[tuple[str, str]]) -> dict:
        return {"kept": [list(pairs[i]) for i in self.kept], "dropped": dict(self.dropped)}


def apply_rule(rule: ComparabilityRule, cases: Sequence[Shape], members: Mapping[str, Shape],
               pairs: Sequence[tuple[str, str]]) -> Comparable:
    """Keep the pairs whose two members are comparable to every suspect."""
    why: dict[str, str | None] = {}
    for name in sorted({m for pair in pairs for m in pair}):
        reasons = [r for case in cases if (r := rule.reason(members[name], case))]
        why[name] = reasons[0] if reasons else None
    kept, dropped = [], {}
    for index, (a, b) in enumerate(pairs):
        bad = [f"{m}: {why[m]}" for m in (a, b) if why[m]]
        if bad:
            dropped[f"{a}|{b}"] = "; ".join(bad)
        else:
            kept.append(index)
    return Comparable(tuple(kept), dropped, why)
