"""The JSON documents of an audit: the results document of ``audit compare --json`` (the signed
report's manifest embeds it) and the summary of ``audit inspect --json``.

A results document is byte-identical for the same inputs and seed: keys are
sorted, floats are rounded to 12 significant digits (so last-bit differences
between BLAS builds do not show), and it carries no timestamps.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from audit import __version__
from audit.atomic import write_atomic

SIGNIFICANT_DIGITS = 12


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


def dumps(document: Mapping[str, Any]) -> str:
    """The canonical text of a document: sorted keys, rounded floats, a final newline."""
    return json.dumps(canonical(document), sort_keys=True, indent=2, allow_nan=False) + "\n"


def write_json(path: str | Path, document: Mapping[str, Any]) -> Path:
    """Write :func:`dumps` of ``document`` atomically."""
    return write_atomic(path, dumps(document).encode())


def result_doc(result) -> dict:
    """A :class:`~audit.stats.TestResult`; the null distribution is summarised, not listed."""
    null = dataclasses.asdict(result.null)
    if result.null_distribution is not None and result.null_distribution.size:
        values = np.asarray(result.null_distribution, dtype=np.float64)
        null["summary"] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
            "max": float(values.max()),
            "quantiles": {q: float(np.quantile(values, float(q))) for q in ("0.5", "0.95", "0.99")},
        }
    return {
        "statistic": result.statistic,
        "pvalue": result.pvalue,
        "log10_pvalue": result.log10_pvalue,
        "null": null,
        "tail": dataclasses.asdict(result.tail) if result.tail else None,
        "details": dict(result.details),
    }


def model_doc(info) -> dict:
    """A :class:`~audit.compare.ModelInfo`."""
    return {"label": info.label, "path": info.path, "sha256": info.sha256, "files": dict(info.files),
            "hashed": {name: info.hashed.get(name, "fresh") for name in info.files},
            "hub": info.hub, "resolved": dict(info.resolved),
            "family": info.family, "depth": info.depth, "hidden": info.hidden, "vocab": info.vocab}


def outcome_doc(outcome) -> dict:
    """A :class:`~audit.compare.MethodOutcome`: the method's description, then its result (or nulls)."""
    method = outcome.method
    out: dict[str, Any] = {
        "name": method.name,
        "applicable": outcome.applicable,
        "reason": outcome.reason,
        "exact": method.exact,
        "calibrated": method.calibrated,
        "caveat": method.caveat,
        "reference": method.reference,
        "explanation": method.explanation,
        "measures": method.measures,
        "survives": method.survives,
        "reads_embeddings": method.reads_embeddings,
        "parameters": dataclasses.asdict(method),
        "fingerprint_bytes": list(outcome.fingerprint_bytes) if outcome.fingerprint_bytes else None,
        "statistic": None, "pvalue": None, "log10_pvalue": None, "null": None, "tail": None, "details": None,
        "detail": None,
    }
    if outcome.result is not None:
        out |= result_doc(outcome.result) | {"detail": method.detail(outcome.result.details)}
    return out


def comparison_doc(comparison) -> dict:
    """A :class:`~audit.compare.Comparison`: the results document of ``audit compare`` without a baseline."""
    return {
        "tool": {"name": "audit", "version": __version__},
        "seed": comparison.seed,
        "hypotheses": {"H0": "the two models were trained independently",
                       "H1": "one model's weights derive from the other's, or both from a common ancestor"},
        "conventions": {
            "pvalue": "one-sided (upper tail: more similar than independent models); a float, so it reads 0.0 "
                      "below about 1e-308, where log10_pvalue stays exact",
            "models.sha256": "SHA-256 of the sha256sum-style listing of the model's files",
            "models.hub": "for a model named by Hugging Face id: repository, revision asked for, commit, and per file "
                          "its blob in the local Hub cache and whether the audited bytes match the blob's name (an LFS "
                          "object's name is the SHA-256 the Hub publishes; a git blob's is git's SHA-1)",
            "models.hashed": "per file: 'fresh' (hashed in this run) or 'cache' (from the opt-in hash cache, "
                             "keyed by device, inode, size and modification time)",
            "models.resolved": "per file: the absolute path read, symlinks resolved (a Hub cache snapshot links "
                               "into blobs/); where the files are, so not compared by verify --recompute",
            "floats": f"rounded to {SIGNIFICANT_DIGITS} significant digits",
        },
        "models": [model_doc(m) for m in comparison.models],
        "methods": [outcome_doc(o) for o in comparison.outcomes],
    }


def evidence_doc(evidence, holm: Mapping[str, float]) -> dict:
    """A :class:`~audit.auditor.MethodEvidence`: comparability, population test, calibration and vote of one method."""
    out: dict[str, Any] = {}
    if evidence.comparability is not None:
        out["comparability"] = dict(evidence.comparability)
    if evidence.population is not None:
        pop = evidence.population
        out["population"] = {
            "statistic": pop.statistic, "pvalue": pop.pvalue, "log10_pvalue": pop.log10_pvalue,
            "min_pvalue": pop.min_pvalue, "n_pairs": pop.n_pairs, "effective_pairs": pop.effective_pairs,
            "n_models": pop.n_models, "disjoint_pairs": pop.disjoint_pairs, "exceedances": pop.exceedances,
            "null_values": [float(v) for v in pop.null_distribution],
            "tail": None if pop.tail is None else {**dataclasses.asdict(pop.tail), "label": "model-based"},
            "tail_note": pop.tail_note,
        }
    if evidence.calibration is not None:
        cal = evidence.calibration
        worst = cal.worst
        out["calibration"] = {
            "scheme": cal.scheme, "alpha": cal.alpha, "n": cal.n,
            "false_positives": cal.false_positives, "fpr": cal.fpr, "fpr_binomial_pvalue": cal.fpr_binomial_pvalue,
            "ks_statistic": cal.ks_statistic, "ks_pvalue": cal.ks_pvalue, "ks_smaller_pvalue": cal.ks_smaller_pvalue,
            "min_attainable": cal.min_attainable, "calibrated": cal.calibrated, "reason": cal.reason,
            "groups": [g.to_dict() for g in cal.groups], "worst_group": None if worst is None else worst.to_dict(),
            "pvalues": [float(p) for p in cal.pvalues],
        }
    vote = evidence.vote
    out["vote"] = {"counts": vote.counts, "log10_pvalue": vote.log10_pvalue, "source": vote.source,
                   "reason": vote.reason, "min_log10_pvalue": vote.min_log10_pvalue,
                   "holm_log10_pvalue": holm.get(vote.method)}
    return out


def plan_doc(plan) -> dict:
    """An :class:`~audit.evidence.plan.Plan`: its content, time and SHA-256."""
    return {**plan.document(), "sha256": plan.digest}


def audit_doc(audit) -> dict:
    """An :class:`~audit.auditor.Audit`: the results document with population evidence, the plan and the verdict."""
    doc = comparison_doc(audit.comparison)
    for entry, evidence in zip(doc["methods"], audit.evidence):
        entry |= evidence_doc(evidence, audit.verdict.holm_log10)
    if audit.baseline is not None:
        base = audit.baseline
        doc["baseline"] = {
            "name": base.name, "path": str(base.root), "digest": base.digest, "seed": base.seed, "size": len(base.members),
            "members": sorted(base.members), "description": base.description,
            "pairs": {e.outcome.method.name: e.population.n_pairs for e in audit.evidence if e.population},
        }
    doc["plan"] = None if audit.plan is None else plan_doc(audit.plan)
    doc["exploratory"] = list(audit.exploratory) or None
    doc["comparability_rule"] = {**audit.rule.to_dict(), "description": audit.rule.describe()}
    verdict = audit.verdict
    doc["alpha"] = verdict.alpha
    doc["decision"] = {"rule": verdict.combination, "k": len(verdict.deciding), "pvalue": verdict.pvalue,
                       "log10_pvalue": verdict.log10_pvalue, "rejected": list(verdict.rejected)}
    doc["combined"] = {"method": "cauchy combination (shown beside the decision; never decides)",
                       "log10_pvalue": verdict.combined_log10,
                       "pvalue": None if verdict.combined_log10 is None else 10.0 ** verdict.combined_log10}
    body = audit.body_verdict
    doc["verdict"] = {"label": verdict.label, "headline": verdict.headline, "reason": verdict.reason,
                      "deciding": list(verdict.deciding), "power": dict(verdict.power),
                      "body_only": {"label": body.label, "log10_pvalue": body.log10_pvalue,
                                    "deciding": list(body.deciding), "reason": body.reason}}
    return doc


def summary_doc(summary) -> dict:
    """An :class:`~audit.inspection.ModelSummary` (``audit inspect --json``)."""
    return dataclasses.asdict(summary)
