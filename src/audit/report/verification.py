"""`audit verify`: the signature checks, then the models' hashes, then a full recomputation.

Each check is one line; the report passes only when every check asked for
passes.  Recomputation re-runs the audit with the manifest's own methods,
seed, alpha and baseline, and compares every number of the results document
(paths excepted: the verifier's copies may live elsewhere).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from audit.auditor import run_audit
from audit.evidence.plan import Plan
from audit.baselines import Population
from audit.checkpoint import open_checkpoint
from audit.errors import AuditError
from audit.format.json import audit_doc, canonical
from audit.report.render import MANIFEST_NAME
from audit.signature import Check, load_certificates, verify_report

IGNORED_KEYS = frozenset({"path", "resolved"})  # where the files are, not what they hold


def differences(expected: Any, actual: Any, where: str = "") -> list[str]:
    """Key paths at which two JSON documents differ (``path`` entries ignored)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        found = []
        for key in sorted(set(expected) | set(actual)):
            if key in IGNORED_KEYS:
                continue
            if key not in expected or key not in actual:
                found.append(f"{where}.{key}".lstrip("."))
            else:
                found += differences(expected[key], actual[key], f"{where}.{key}")
        return found
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where} (length {len(expected)} vs {len(actual)})".lstrip(".")]
        found = []
        for i, (e, a) in enumerate(zip(expected, actual)):
            found += differences(e, a, f"{where}[{i}]")
        return found
    return [] if expected == actual else [where.lstrip(".") or "(document)"]


def _rehash(manifest: dict, models: Sequence[str]) -> list[Check]:
    checks = []
    for entry, path in zip(manifest["audit"]["models"], models):
        try:
            with open_checkpoint(path) as checkpoint:
                found = checkpoint.file_hashes()
        except AuditError as exc:
            checks.append(Check(f"model {entry['label']}", False, str(exc)))
            continue
        expected = entry["files"]
        changed = sorted(name for name in set(expected) | set(found) if expected.get(name) != found.get(name))
        if changed:
            checks.append(Check(f"model {entry['label']}", False, f"{path}: files differ from the audited ones: {', '.join(changed)}"))
        else:
            checks.append(Check(f"model {entry['label']}", True, f"{path}: all {len(expected)} files match their SHA-256"))
    return checks


def _population(doc: dict, baseline: str | None) -> tuple[Population | None, Check | None]:
    """The audit's baseline, its pairs recomputed from its fingerprints (no cache is trusted), and
    whether it is the population the report names (by digest)."""
    recorded = doc.get("baseline")
    if not recorded:
        return None, None
    if not recorded.get("digest"):
        return None, Check("baseline", False, "the report records no population digest (made by an earlier release): "
                                              "the population's identity cannot be checked")
    try:
        population = Population.open(baseline or recorded["path"], recompute_pairs=True)
    except AuditError as exc:
        return None, Check("baseline", False, str(exc))
    if population.digest != recorded["digest"]:
        return None, Check("baseline", False, f"{population.root}: population digest {population.digest} is not the "
                                              f"audited population's {recorded['digest']}")
    return population, Check("baseline", True, f"{population.root}: the audited population (digest {population.digest[:16]}...), "
                                               "its pairs recomputed from its fingerprints")


def _recompute(manifest: dict, models: Sequence[str], baseline: str | None) -> list[Check]:
    doc = manifest["audit"]
    population, check = _population(doc, baseline)
    if check is not None and not check.ok:
        return [check]
    plan = Plan.from_document(doc["plan"], "the report's analysis plan") if doc.get("plan") else None
    audit = run_audit(models[0], models[1], baseline=population, methods=[m["name"] for m in doc["methods"]],
                      seed=doc["seed"], alpha=doc["alpha"], plan=plan)
    found = differences(doc, canonical(audit_doc(audit)))
    if found:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        return [*filter(None, [check]), Check("recompute", False, f"{len(found)} number(s) differ from the manifest: {shown}")]
    return [*filter(None, [check]), Check("recompute", True, f"re-ran the audit (seed {doc['seed']}): every number matches the manifest")]


def verify_audit_report(
    pdf: str | Path,
    *,
    trust: Sequence[str | Path] = (),
    models: Sequence[str] | None = None,
    recompute: bool = False,
    baseline: str | None = None,
) -> list[Check]:
    """All the checks `audit verify` prints, in order."""
    outcome = verify_report(pdf, load_certificates(trust) if trust else None, manifest_name=MANIFEST_NAME)
    checks = list(outcome.checks)
    manifest = outcome.manifest
    if manifest is None or "audit" not in manifest:
        if models or recompute:
            checks.append(Check("manifest", False, "no usable manifest: cannot re-hash or recompute"))
        return checks
    paths = list(models) if models else [m["path"] for m in manifest["audit"]["models"]]
    if models or recompute:
        checks += _rehash(manifest, paths)
    if recompute:
        checks += _recompute(manifest, paths, baseline)
    return checks
