"""The signed PDF audit: manifest, figures, HTML, PDF/A-3b, PAdES signature.

The report is a pure function of its manifest (the audit's results document,
the inputs' descriptions and the case details): everything shown is read
from the manifest, and the manifest travels inside the signed PDF, so what a
verifier recomputes is exactly what the reader saw.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping


from audit.atomic import write_atomic
from audit.auditor import Audit
from audit.baselines import PairTable
from audit.errors import InputError
from audit.format.json import audit_doc, canonical
from audit.inspection import ARCHITECTURE
from audit.methods import get_method
from audit.report import plots
from audit.report.render import MANIFEST_NAME, html_to_pdf, render_html
from audit.signature import AuditorKey, sign_pdf

VERSIONED = ("numpy", "scipy", "statsmodels", "matplotlib", "weasyprint", "pyhanko", "safetensors", "ml_dtypes")
VERDICT_TEXT = {
    "derived": "A similarity this strong is very unlikely between independently trained models: the data are "
               "evidence that one model's weights derive from the other's, or that both derive from a common ancestor.",
    "not-rejected": "At the declared significance level the data do not show derivation. This does not prove that "
                    "the models were trained independently: a derivation the methods cannot see (or too small a "
                    "baseline population) would give the same result.",
    "inconclusive": "The audit cannot decide either way with the methods and baseline available for this pair; "
                    "the reason is given below.",
    "exploratory": "This analysis does not follow a pre-registered analysis plan: its numbers are shown for "
                   "exploration, and it gives no verdict.",
}


def describe_inputs(audit: Audit) -> list[dict]:
    """Architecture, configuration and file sizes of the two models, for the manifest: the audit's own
    record of the files it hashed (the models are not opened again)."""
    return [{
        "label": info.label,
        "path": info.path,
        "architecture": dict(info.architecture),
        "files": [{"name": name, "bytes": info.sizes.get(name), "sha256": digest, "hashed": info.hashed.get(name, "fresh")}
                  for name, digest in sorted(info.files.items())],
        "config": dict(info.config or {}),
        "hub": info.hub,
    } for info in audit.comparison.models]


def versions() -> dict[str, str]:
    found = {"audit": metadata.version("model-provenance-audit"), "python": platform.python_version()}
    for package in VERSIONED:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def build_manifest(audit: Audit, key: AuditorKey, case_id: str, command: str, date: dt.date | None = None) -> dict:
    """Everything the report shows, as one JSON-ready document."""
    members = []
    if audit.baseline is not None:
        members = [audit.baseline.members[name].to_dict() for name in sorted(audit.baseline.members)]
    info = key.info
    return canonical({
        "format": "audit-report-manifest",
        "format_version": 1,
        "case": {"id": case_id, "date": (date or dt.datetime.now(dt.timezone.utc).date()).isoformat(), "command": command},
        "auditor": {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in dataclasses.asdict(info).items()},
        "versions": versions(),
        "audit": audit_doc(audit),
        "inputs": describe_inputs(audit),
        "baseline_members": members,
        "baseline_pairs": _pair_tables(audit),
    })


def _pair_tables(audit: Audit) -> dict:
    if audit.baseline is None:
        return {}
    return {e.outcome.method.name: audit.baseline.pair_table(e.outcome.method.name).to_dict() for e in audit.evidence
            if e.outcome.method.population_heatmap}


def _config_differences(inputs: list[dict]) -> list[tuple[str, str, str]]:
    a, b = inputs[0]["config"], inputs[1]["config"]
    rows = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            rows.append((key, json.dumps(a.get(key, "–"))[:60], json.dumps(b.get(key, "–"))[:60]))
    return rows


ARCHITECTURE_LABELS = {"family": "Family", "depth": "Layers", "hidden": "Hidden width", "mlp_width": "MLP width",
                       "vocab": "Vocabulary", "heads": "Heads", "kv_heads": "KV heads", "experts": "Experts per layer",
                       "parameters": "Parameters"}  # the rest by their field names


def _input_rows(inputs: list[dict]) -> list[dict]:
    rows = [{"label": "Path", "a": inputs[0]["path"], "b": inputs[1]["path"], "css": "mono"}]
    for key in ARCHITECTURE:
        label = ARCHITECTURE_LABELS.get(key, key)
        values = [i["architecture"].get(key) for i in inputs]
        shown = [", ".join(f"{k} x{n}" for k, n in v.items()) if isinstance(v, dict)
                 else (f"{v:,}" if isinstance(v, int) and key == "parameters" else ("–" if v is None else str(v)))
                 for v in values]
        rows.append({"label": label, "a": shown[0], "b": shown[1], "css": ""})
    hubs = [i.get("hub") for i in inputs]
    if any(hubs):
        for what, label, css in (("repo", "Hugging Face repository", "mono"), ("commit", "Commit", "mono"),
                                 ("lfs", "LFS files", "")):
            rows.append({"label": label, "a": _hub_cell(hubs[0], what), "b": _hub_cell(hubs[1], what), "css": css})
    return rows


def _hub_cell(hub: Mapping[str, Any] | None, what: str) -> str:
    """One cell of the inputs table for a model named by Hub id (an en dash for a local path)."""
    if not hub:
        return "–"
    if what == "repo":
        return f"{hub['repo_id']}@{hub['revision']}"
    if what == "commit":
        return hub["commit"]
    text = f"{hub['lfs_verified']} of {hub['lfs_files']} match their SHA-256 blob id"
    return text + (f"; DIFFERENT: {', '.join(hub['mismatched'])}" if hub["mismatched"] else "")


def _figures(method: Mapping[str, Any], labels: tuple[str, str]) -> list[dict]:
    figures = []
    name = method["name"]
    if method.get("details"):
        for figure in get_method(name).figures(method["details"]):
            models = {"label_a": labels[0], "label_b": labels[1]} if figure.per_model else {}
            figures.append({"svg": getattr(plots, figure.plot)(**figure.data, **models), "caption": figure.caption, "css": ""})
    population = method.get("population")
    if population:
        tail = population.get("tail")
        figures.append({"svg": plots.null_histogram(population["null_values"], method["statistic"], f"{name} statistic",
                                                    (tail["loc"], tail["scale"], tail["transform"]) if tail else None),
                        "caption": f"{name} between all comparable pairs of independently trained baseline models, "
                                   "with this pair's value marked.", "css": ""})
    calibration = method.get("calibration")
    if calibration and calibration.get("pvalues"):
        figures.append({"svg": plots.calibration_qq(calibration["pvalues"], calibration["alpha"]),
                        "caption": f"Calibration of {name} on the baseline population: p-values of independent pairs "
                                   "against uniform quantiles (on the diagonal when calibrated).", "css": "half"})
    return figures


def _heatmaps(manifest: Mapping[str, Any]) -> list[dict]:
    members = [m["name"] for m in manifest["baseline_members"]]
    figures = []
    for method, table in manifest["baseline_pairs"].items():
        matrix = PairTable.from_dict(method, table).matrix(members)
        figures.append({"svg": plots.similarity_heatmap(matrix, members, f"{method} between baseline models"),
                        "caption": f"{method} for every pair of baseline models (blank: not comparable, e.g. different depths)."})
    return figures


def _limitations(manifest: Mapping[str, Any]) -> list[str]:
    doc = manifest["audit"]
    items = []
    if doc.get("baseline"):
        floors = sorted((m["population"]["min_pvalue"], m["name"], m["population"]["effective_pairs"])
                        for m in doc["methods"] if m.get("population"))
        if floors:
            items.append(f"The population nulls rest on {doc['baseline']['size']} models. Pairs of baseline models share "
                         f"models, so they are not independent draws: the comparable pairs are worth "
                         f"{floors[0][2]:.1f} independent ones at best ({floors[0][1]}), and no population p-value can be "
                         f"smaller than {floors[0][0]:.3g} ({floors[-1][0]:.3g} for {floors[-1][1]}). Calibration "
                         "leaves one recorded group of members out at a time.")
        for m in doc["methods"]:
            vote = m.get("vote") or {}
            if not vote.get("counts") and str(vote.get("reason", "")).startswith("no comparable population"):
                items.append(f"{m['name']}: {vote['reason']}.")
    else:
        items.append("No baseline population was given: only exact within-pair tests count, and their calibration "
                     "on independently trained models was not checked in this audit.")
    for m in doc["methods"]:
        if m.get("caveat") and m["applicable"]:
            items.append(f"{m['name']}: {m['caveat']}.")
    body = [m["name"] for m in doc["methods"] if not m.get("reads_embeddings")]
    items.append("Methods that read embeddings can detect derivation through token rows that training never changed; "
                 f"the transformer-body methods ({', '.join(body) or 'none in this audit'}) do not depend on them.")
    items.append("A p-value above alpha is not proof of independence: transformations a method does not survive "
                 "(stated in each section) hide a derivation from it.")
    return items


def render_report(manifest: Mapping[str, Any], manifest_bytes: bytes) -> bytes:
    """Unsigned PDF/A-3b of the report described by ``manifest``."""
    doc = manifest["audit"]
    labels = (f"A: {Path(doc['models'][0]['path']).name}", f"B: {Path(doc['models'][1]['path']).name}")
    methods = [dict(m, figures=_figures(m, labels), about=m.get("explanation", ""), reference=m.get("reference", ""),
                    population=m.get("population"), calibration=m.get("calibration"), comparability=m.get("comparability"),
                    detail=m.get("detail") or "")
               for m in doc["methods"]]
    context = {
        "doc": doc,
        "case": manifest["case"],
        "auditor": manifest["auditor"],
        "verdict_text": VERDICT_TEXT[doc["verdict"]["label"]],
        "power": doc["verdict"].get("power") or {},
        "input_rows": _input_rows(manifest["inputs"]),
        "files": [dict(f, model=i["label"]) for i in manifest["inputs"] for f in i["files"]],
        "config_differences": _config_differences(manifest["inputs"]),
        "methods": methods,
        "members": manifest["baseline_members"],
        "baseline_figures": _heatmaps(manifest) if doc.get("baseline") else [],
        "limitations": _limitations(manifest),
        "versions": manifest["versions"],
        "manifest_name": MANIFEST_NAME,
        "verify_command": manifest["case"].get("verify", ""),
    }
    html = render_html("report.html.j2", context)
    return html_to_pdf(html, manifest_bytes, title=f"audit {manifest['case']['id']}")


def write_report(
    audit: Audit,
    out: str | Path,
    *,
    key: AuditorKey,
    case_id: str,
    command: str,
    verify_command: str,
    timestamp_url: str | None = None,
) -> Path:
    """Render, sign in memory and write ``out`` atomically (nothing is written on failure).

    Every file hash must have been computed in this run: a signature vouches
    for the bytes audited, which a cached digest (keyed by file metadata) cannot.
    """
    stale = [f"{m.label}/{name}" for m in audit.comparison.models for name, how in m.hashed.items() if how != "fresh"]
    if stale:
        raise InputError(f"a signed report hashes every file fresh, but {stale[0]} came from the hash cache; "
                         "run the audit without a hash cache")
    manifest = build_manifest(audit, key, case_id, command)
    manifest["case"]["verify"] = verify_command
    manifest_bytes = (json.dumps(manifest, sort_keys=True, indent=1, allow_nan=False) + "\n").encode()
    pdf = render_report(manifest, manifest_bytes)
    signed = sign_pdf(pdf, key, reason=f"Model provenance audit, case {case_id}", timestamp_url=timestamp_url)
    return write_atomic(out, signed)


def check_case_id(case_id: str) -> str:
    """Case ids appear in page headers: letters, digits and a few separators only."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 ._/:-]{0,79}", case_id):
        raise InputError(f"case id '{case_id}' must be 1-80 letters, digits, spaces or . _ / : -")
    return case_id
