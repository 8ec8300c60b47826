"""The pre-registered analysis plan: fixed, hashed and time-stamped before any model is read.

A plan names the methods that will count, the significance level, the seed
that drives every random choice, the baseline population (by its digest) and
the comparability rule.  ``audit plan`` writes it; ``audit report --plan``
decides by it and the report shows its SHA-256 and time.  An analysis that
differs from its plan (another method subset, alpha, seed or population),
or that has no plan, is exploratory: its numbers are shown, but it gives no
verdict.  A plan whose population digest is not the population's is refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from audit.atomic import write_atomic
from audit.errors import InputError
from audit.files import LIMITS, parse_json, read_file
from audit.evidence.comparability import ComparabilityRule

FORMAT = "audit-analysis-plan"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Plan:
    methods: tuple[str, ...]
    alpha: float
    seed: int
    population: str | None  # the baseline's digest (None: no baseline, exact within-pair tests only)
    population_name: str | None
    rule: ComparabilityRule = field(default_factory=ComparabilityRule)
    created: str = ""  # ISO 8601 UTC time the plan was written

    def document(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "methods": list(self.methods), "alpha": self.alpha,
                "seed": self.seed, "population": {"digest": self.population, "name": self.population_name},
                "comparability": self.rule.to_dict(), "created": self.created}

    def to_bytes(self) -> bytes:
        return (json.dumps(self.document(), sort_keys=True, indent=2) + "\n").encode()

    @property
    def digest(self) -> str:
        """SHA-256 of the plan file's canonical bytes: what the report quotes."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def save(self, path: str | Path) -> Path:
        return write_atomic(path, self.to_bytes())

    @classmethod
    def from_document(cls, data: Any, where: str = "plan") -> Plan:
        if isinstance(data, dict) and "sha256" in data:
            data = {k: v for k, v in data.items() if k != "sha256"}
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
            raise InputError(f"{where}: not an {FORMAT} version {FORMAT_VERSION} file")
        try:
            methods = tuple(str(m) for m in data["methods"])
            alpha = float(data["alpha"])
            seed = data["seed"]
            population = data["population"]
            plan = cls(methods, alpha, seed, population["digest"], population["name"],
                       ComparabilityRule.from_dict(data["comparability"]), str(data["created"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: malformed analysis plan ({exc})") from None
        if not methods or not (0 < alpha < 1 and math.isfinite(alpha)) or type(seed) is not int or not 0 <= seed < 2**63:
            raise InputError(f"{where}: a plan needs methods, 0 < alpha < 1 and a whole-number seed")
        return plan

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        raw = read_file(path, limit=LIMITS["plan"], what="analysis plan")  # read once: parsed and compared
        plan = cls.from_document(parse_json(raw, where=path, what="analysis plan"), str(path))
        if plan.to_bytes() != raw:
            raise InputError(f"analysis plan {path} was edited after it was written (not in its canonical form)")
        return plan

    def deviations(self, *, methods: Sequence[str], alpha: float, seed: int, population: str | None,
                   rule: ComparabilityRule) -> list[str]:
        """How an analysis differs from this plan (empty: it follows the plan)."""
        found = []
        if tuple(methods) != self.methods:
            found.append(f"methods {', '.join(methods)} instead of the plan's {', '.join(self.methods)}")
        if alpha != self.alpha:
            found.append(f"alpha {alpha:g} instead of {self.alpha:g}")
        if seed != self.seed:
            found.append(f"seed {seed} instead of {self.seed}")
        if population != self.population:
            found.append(f"population {population or 'none'} instead of {self.population or 'none'}")
        if rule != self.rule:
            found.append("another comparability rule")
        return found


def make_plan(*, methods: Sequence[str], alpha: float, seed: int, population: str | None,
              population_name: str | None, rule: ComparabilityRule | None = None,
              now: dt.datetime | None = None) -> Plan:
    """A new plan, time-stamped now (UTC, whole seconds)."""
    if not 0 < alpha < 1:
        raise InputError(f"alpha must lie strictly between 0 and 1, not {alpha}")
    moment = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc).replace(microsecond=0)
    return Plan(tuple(dict.fromkeys(methods)), float(alpha), int(seed), population, population_name,
                rule or ComparabilityRule(), moment.isoformat().replace("+00:00", "Z"))
