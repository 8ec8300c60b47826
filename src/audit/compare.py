"""Compare two checkpoints with every method: the library behind `audit compare`.

Each method is run independently: a method that does not apply to the pair
(roles missing, shapes differ) is reported with its reason instead of
failing the comparison.  The results document (:meth:`Comparison.to_json`) is
byte-identical for the same inputs and seed: keys are sorted, floats are
rounded to 12 significant digits (so last-bit differences between BLAS
builds do not show), and it carries no timestamps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from audit import __version__
from audit.atomic import write_atomic
from audit.checkpoint import Checkpoint, open_checkpoint
from audit.methods import REGISTRY, Fingerprint, Inapplicable, Method, Model, get_method
from audit.parallel import progress
from audit.roles import assign_roles
from audit.stats import TestResult, derive_seed, format_pvalue
from audit.text import columns

SIGNIFICANT_DIGITS = 12


@dataclass(frozen=True)
class ModelInfo:
    """Where a model came from: the path as given and the SHA-256 of every file."""

    label: str
    path: str
    files: Mapping[str, str]
    family: str
    depth: int
    hidden: int | None = None
    vocab: int | None = None

    @property
    def sha256(self) -> str:
        """One digest for the whole model: SHA-256 of the ``sha256sum``-style listing of its files."""
        listing = "".join(f"{digest}  {name}\n" for name, digest in sorted(self.files.items()))
        return hashlib.sha256(listing.encode()).hexdigest()

    def to_dict(self) -> dict:
        return {"label": self.label, "path": self.path, "sha256": self.sha256, "files": dict(self.files),
                "family": self.family, "depth": self.depth, "hidden": self.hidden, "vocab": self.vocab}


@dataclass(frozen=True)
class MethodOutcome:
    """One method on one pair: its result, or why it does not apply."""

    method: Method
    result: TestResult | None
    reason: str | None = None
    fingerprint_bytes: tuple[int, int] | None = None

    @property
    def applicable(self) -> bool:
        return self.result is not None

    def to_dict(self) -> dict:
        method = self.method
        out: dict[str, Any] = {
            "name": method.name,
            "applicable": self.applicable,
            "reason": self.reason,
            "exact": method.exact,
            "calibrated": method.calibrated,
            "caveat": method.caveat,
            "reference": method.reference,
            "explanation": method.explanation,
            "measures": method.measures,
            "survives": method.survives,
            "parameters": dataclasses.asdict(method),
            "fingerprint_bytes": list(self.fingerprint_bytes) if self.fingerprint_bytes else None,
            "statistic": None, "pvalue": None, "log10_pvalue": None, "null": None, "tail": None, "details": None,
        }
        if self.result is not None:
            out |= self.result.to_dict()
        return out


@dataclass(frozen=True)
class Comparison:
    models: tuple[ModelInfo, ModelInfo]
    seed: int
    outcomes: tuple[MethodOutcome, ...]

    def to_dict(self) -> dict:
        return {
            "tool": {"name": "audit", "version": __version__},
            "seed": self.seed,
            "hypotheses": {"H0": "the two models were trained independently",
                           "H1": "one model's weights derive from the other's, or both from a common ancestor"},
            "conventions": {
                "pvalue": "one-sided (upper tail: more similar than independent models); a float, so it reads 0.0 "
                          "below about 1e-308, where log10_pvalue stays exact",
                "models.sha256": "SHA-256 of the sha256sum-style listing of the model's files",
                "floats": f"rounded to {SIGNIFICANT_DIGITS} significant digits",
            },
            "models": [m.to_dict() for m in self.models],
            "methods": [o.to_dict() for o in self.outcomes],
        }

    def to_json(self) -> str:
        return json.dumps(canonical(self.to_dict()), sort_keys=True, indent=2, allow_nan=False) + "\n"

    def write_json(self, path: str | Path) -> Path:
        return write_atomic(path, self.to_json().encode())


def canonical(value: Any) -> Any:
    """JSON-ready copy: numpy scalars to Python, floats to 12 significant digits, NaN/Inf to None."""
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [canonical(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}") if math.isfinite(value) else None
    return value


def method_list(names: Sequence[str] | None) -> list[str]:
    """The methods to run, in registry order when none are named."""
    return list(REGISTRY) if not names else list(dict.fromkeys(names))


def compare_models(
    path_a: str | Path,
    path_b: str | Path,
    methods: Sequence[str] | None = None,
    seed: int = 0,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> Comparison:
    """Run ``methods`` (default: all) on the pair; ``params`` overrides method parameters by method name."""
    with closing(compare_against(path_a, [path_b], methods, seed, params)) as comparisons:
        return next(comparisons)


def compare_against(
    path_a: str | Path,
    paths_b: Sequence[str | Path],
    methods: Sequence[str] | None = None,
    seed: int = 0,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> Iterator[Comparison]:
    """One :func:`compare_models` per model in ``paths_b``, A opened and fingerprinted once.

    Scanning a suspect against many candidates reads the suspect's weights
    once per fingerprint kind, not once per candidate; each candidate is
    opened only while it is compared, so memory does not grow with their number.
    """
    chosen = [get_method(name, **dict((params or {}).get(name, {}))) for name in method_list(methods)]
    cache: dict[tuple, Fingerprint] = {}
    with open_checkpoint(path_a) as checkpoint_a:
        info_a, model_a = _load("A", path_a, checkpoint_a)
        for path_b in paths_b:
            with open_checkpoint(path_b) as checkpoint_b:
                info_b, model_b = _load("B", path_b, checkpoint_b)
                for slot in [slot for slot in cache if slot[0] == "B"]:
                    del cache[slot]  # the previous candidate's fingerprints
                outcomes = []
                with progress(len(chosen), "methods") as bar:
                    for method in chosen:
                        bar.set_postfix_str(method.name)
                        outcomes.append(run_method(method, [("A", model_a), ("B", model_b)], seed, cache))
                        bar.update()
                yield Comparison((info_a, info_b), seed, tuple(outcomes))


def _load(label: str, path: str | Path, checkpoint: Checkpoint) -> tuple[ModelInfo, Model]:
    roles = assign_roles(checkpoint)
    embed = roles.globals.get("embed")
    q = next((layer.roles["attn.q"] for layer in roles.layers if "attn.q" in layer.roles), None)
    hidden = embed.shape[1] if embed is not None else (q.shape[1] if q is not None else None)
    info = ModelInfo(label, str(path), checkpoint.file_hashes(), roles.family, roles.depth, hidden,
                     embed.shape[0] if embed is not None else None)
    return info, Model(roles, checkpoint.vocab)


def run_method(
    method: Method, models: Sequence[tuple[str, Model]], seed: int, cache: dict[tuple, Fingerprint] | None = None
) -> MethodOutcome:
    """Fingerprint both models and test; an inapplicable method says why.

    ``models`` is two (key, model) pairs, keys being labels or model names; ``cache`` keeps
    fingerprints by (key, fingerprint kind, parameters, seed) across methods
    and pairs, so methods sharing a fingerprint read the weights once.
    """
    cache = {} if cache is None else cache
    for key, model in models:
        if reason := method.requirement(model):
            return MethodOutcome(method, None, f"model {key}: {reason}")
    try:
        prints = []
        for key, model in models:
            slot = (key, method.fingerprint_kind, json.dumps(method.fingerprint_params(), sort_keys=True), seed)
            if slot not in cache:
                cache[slot] = method.extract(model, seed)
            prints.append(cache[slot])
        sizes = (prints[0].nbytes, prints[1].nbytes)
        if reason := method.mismatch(*prints):
            return MethodOutcome(method, None, reason, sizes)
        return MethodOutcome(method, method.test(*prints, derive_seed(seed, "test", method.name)), None, sizes)
    except Inapplicable as exc:
        return MethodOutcome(method, None, str(exc))


def format_table(comparison: Comparison) -> str:
    """The human-readable summary `audit compare` prints."""
    lines = [f"{m.label}: {m.path}  ({m.family}, {m.depth} layers, sha256 {m.sha256[:16]})" for m in comparison.models]
    lines += [f"seed: {comparison.seed}", ""]
    header = ("method", "statistic", "p-value", "model-based p", "null", "notes")
    rows = []
    for outcome in comparison.outcomes:
        method, result = outcome.method, outcome.result
        if result is None:
            rows.append((method.name, "-", "-", "-", "-", f"not applicable: {outcome.reason}"))
            continue
        null = result.null.kind + (f" (n={result.null.size})" if result.null.size else "")
        tail = format_pvalue(result.tail.log10_pvalue) if result.tail else "-"
        note = "uncalibrated: not evidence yet" if not method.calibrated else ("exact under H0" if method.exact else "")
        rows.append((method.name, f"{result.statistic:.4f}", format_pvalue(result.log10_pvalue), tail, null, note))
    lines += columns(header, rows)
    notes = [f"- {o.method.name}: {line}" for o in comparison.outcomes if o.result and (line := _detail_line(o.result))]
    if notes:
        lines += ["", *notes]
    caveats = [f"- {o.method.name}: {o.method.caveat}" for o in comparison.outcomes if o.applicable and o.method.caveat]
    if caveats:
        lines += ["", "caveats:", *caveats]
    lines += ["", "A small p-value is evidence against independent training; a large one is not proof of independence."]
    return "\n".join(lines)


def _detail_line(result: TestResult) -> str | None:
    """The per-projection r of attn-std, or which MoE blocks matched best."""
    details = result.details
    if "per_projection" in details:
        return "r per projection: " + ", ".join(f"{p.removeprefix('attn.')} {r:.3f}"
                                                for p, r in details["per_projection"].items())
    if any(layer["pairs_compared"] > 1 for layer in details.get("layers", [])):
        a, b = details["most_frequent_best_pair"]
        return f"best-matching MLP blocks (most layers): A {a} ~ B {b}; Bonferroni over the pairs compared per layer"
    return None
