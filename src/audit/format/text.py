"""Plain text for the terminal: what every command prints.

Library imports sit inside the functions: `audit inspect` loads this module
and must not load scipy through :mod:`audit.stats`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Mapping, Sequence

if TYPE_CHECKING:
    from audit.auditor import Audit, Evaluation, ScanRow
    from audit.baselines import Population
    from audit.compare import Comparison
    from audit.inspection import ModelSummary


def columns(header: Sequence[object], rows: Sequence[Sequence[object]]) -> list[str]:
    """Header and rows as lines of left-aligned columns, two spaces apart (the last column unpadded)."""
    table = [[str(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]).rstrip() for row in table]


def hub_line(hub: Mapping) -> str:
    """Repository, commit and the LFS blob check of a model named by Hub id."""
    unchecked = sum(1 for c in hub["files"].values() if c["lfs"] and c["matches"] is None)
    line = (f"Hugging Face {hub['repo_id']}@{hub['revision']}, commit {hub['commit']}: "
            f"{hub['lfs_verified']} of {hub['lfs_files']} LFS files match their SHA-256 blob ids"
            + (f" ({unchecked} not hashed)" if unchecked else ""))
    if hub["mismatched"]:
        line += f"; WARNING: {', '.join(hub['mismatched'])} differ from the blob the Hub cache names"
    return line


def format_comparison(comparison: Comparison) -> str:
    """The method table `audit compare` prints."""
    from audit.stats import format_pvalue

    lines = []
    for m in comparison.models:
        lines.append(f"{m.label}: {m.path}  ({m.family}, {m.depth} layers, sha256 {m.sha256[:16]}"
                     f"{'' if m.fresh else ', file hashes from the hash cache'})")
        if m.hub is not None:
            lines.append(f"   {hub_line(m.hub)}")
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
    notes = [f"- {o.method.name}: {line}" for o in comparison.outcomes if o.result and (line := o.method.detail(o.result.details))]
    if notes:
        lines += ["", *notes]
    caveats = [f"- {o.method.name}: {o.method.caveat}" for o in comparison.outcomes if o.applicable and o.method.caveat]
    if caveats:
        lines += ["", "caveats:", *caveats]
    lines += ["", "A small p-value is evidence against independent training; a large one is not proof of independence."]
    return "\n".join(lines)


def format_audit(audit: Audit) -> str:
    """`audit compare --baseline`: the method table, then comparability, population, calibration, plan and verdict."""
    from audit.evidence import EXPLORATORY
    from audit.stats import format_pvalue

    lines = [format_comparison(audit.comparison), ""]
    if audit.baseline is not None:
        lines.append(f"baseline: {audit.baseline.name} ({len(audit.baseline.members)} models, seed {audit.baseline.seed}); "
                     f"comparability: {audit.rule.describe()}")
        header = ("method", "population p", "model-based p", "pairs kept/dropped", "n_eff", "calibration (worst group)",
                  "counts")
        rows = []
        for e in audit.evidence:
            pop, cal, comp = e.population, e.calibration, e.comparability
            worst = cal.worst if cal else None
            rows.append((
                e.outcome.method.name,
                format_pvalue(pop.log10_pvalue) if pop else "-",
                format_pvalue(pop.tail.log10_pvalue) if pop and pop.tail else "-",
                f"{comp['kept_count']}/{comp['dropped_count']}" if comp else "-",
                f"{pop.effective_pairs:.1f}" if pop else "-",
                (("ok" if cal.calibrated else "MISCALIBRATED") + f" {cal.false_positives}/{cal.n}"
                 + (f" ({worst.false_positives}/{worst.n})" if worst else "")) if cal else "-",
                (e.vote.source or "") if e.vote.counts else f"no: {e.vote.reason}",
            ))
        lines += columns(header, rows)
        lines.append("")
    v = audit.verdict
    if audit.plan is not None:
        lines.append(f"analysis plan: sha256 {audit.plan.digest}, written {audit.plan.created}")
    decision = (f"smallest Holm-adjusted p = {format_pvalue(v.log10_pvalue)} over {len(v.deciding)} method(s)"
                if v.log10_pvalue is not None else "no counting method")
    if v.combined_log10 is not None and len(v.deciding) > 1:
        decision += f"; Cauchy combination {format_pvalue(v.combined_log10)} (shown, does not decide)"
    if v.label == EXPLORATORY:
        lines.append(f"EXPLORATORY (no verdict): {'; '.join(audit.exploratory)}; {decision}")
    else:
        lines.append(f"verdict at alpha {v.alpha:g}: {v.label.upper()} - {v.headline}; {decision}")
    lines.append(f"  {v.reason}")
    return "\n".join(lines)


def format_evaluation(result: Evaluation) -> str:
    """`audit evaluate`: a reported statistic against the comparable pairs of the population's null."""
    import numpy as np

    from audit.stats import format_pvalue

    test, comp = result.test, result.comparability
    lines = [
        f"{result.method} = {test.statistic:g} against population '{result.population}' "
        f"({test.n_pairs} comparable independent pairs of {test.n_models} models, worth {test.effective_pairs:.1f} "
        "independent pairs)",
        f"empirical p = {test.pvalue:.4g} ({test.exceedances} pair(s) at least as similar; smallest attainable "
        f"{test.min_pvalue:.4g})",
    ]
    if test.tail is not None:
        lines.append(f"model-based p = {format_pvalue(test.tail.log10_pvalue)} (normal fitted to the {test.tail.transform} "
                     f"null; {test.tail.gof_test} p = {test.tail.gof_pvalue:.3g}; shown beside, never decisive)")
    elif test.tail_note:
        lines.append(test.tail_note)
    quantiles = np.quantile(test.null_distribution, [0.5, 0.95, 0.99])
    lines.append(f"null: median {quantiles[0]:.4f}, 95% {quantiles[1]:.4f}, 99% {quantiles[2]:.4f}, max {test.null_distribution.max():.4f}")
    lines.append(f"comparability: {comp['rule']}; kept {comp['kept_count']} pair(s), dropped {comp['dropped_count']}")
    lines.append("exploratory: a single reported number, outside any analysis plan")
    return "\n".join(lines)


def format_scan(rows: Sequence[ScanRow], alpha: float) -> str:
    """`audit scan`: candidates ranked by Benjamini-Hochberg-adjusted p (exploratory)."""
    from audit.stats import format_pvalue

    header = ("rank", "candidate", "Holm p (pair)", "BH-adjusted p", "flagged")
    table = [(str(i + 1), r.candidate, format_pvalue(r.audit.verdict.log10_pvalue) if r.audit.verdict.log10_pvalue is not None else "-",
              format_pvalue(r.bh_log10_pvalue) if r.bh_log10_pvalue is not None else "-",
              "yes (BH <= alpha)" if r.bh_log10_pvalue is not None and r.bh_log10_pvalue <= math.log10(alpha) else "no")
             for i, r in enumerate(rows)]
    lines = columns(header, table)
    lines.append(f"Benjamini-Hochberg controls the false discovery rate across the {len(rows)} candidates at alpha {alpha:g}. "
                 "Exploratory: a scan follows no analysis plan; audit a flagged pair by a plan for a verdict.")
    return "\n".join(lines)


def format_summary(summary: ModelSummary) -> str:
    """`audit inspect`: a checkpoint's structure, roles and file hashes."""

    def known(value: object) -> str:
        return "unknown (no config.json)" if value is None else str(value)

    lines = [
        f"checkpoint   {summary.path}",
        f"family       {summary.family} (detected from {summary.detected_by}"
        + (f"; model_type {summary.model_type})" if summary.model_type else ")"),
        f"depth        {summary.depth} layers",
        f"hidden       {summary.hidden}",
        f"MLP width    {summary.mlp_width if summary.mlp_width is not None else '-'}",
        f"vocabulary   {summary.vocab if summary.vocab is not None else '-'}",
        f"heads        {known(summary.heads)} (kv heads {known(summary.kv_heads)}, head dim {known(summary.head_dim)})",
    ]
    if summary.experts:
        lines.append(
            f"experts      {summary.experts} per MoE layer in {summary.moe_layers} layer(s), width {summary.expert_mlp_width}"
            + (f"; shared expert width {summary.shared_expert_width}" if summary.shared_expert_width else "")
        )
    lines += [
        f"parameters   {summary.parameters:,} in {summary.tensors} tensors"
        + (f" (+{summary.other_elements:,} non-float buffer elements)" if summary.other_elements else ""),
        "dtypes       " + ", ".join(f"{d} x{n}" for d, n in summary.dtypes.items()),
        "layer roles  " + " ".join(summary.layer_roles),
    ]
    grouped: dict[tuple[int, ...], list[str]] = {}
    for role, layers in summary.partial_roles.items():
        grouped.setdefault(tuple(layers), []).append(role)
    lines += [f"  only in layers {list(layers)}: {' '.join(names)}" for layers, names in grouped.items()]
    if summary.expert_roles:
        lines.append("expert roles " + " ".join(summary.expert_roles))
    if summary.shared_expert_roles:
        lines.append("shared roles " + " ".join(summary.shared_expert_roles))
    lines.append("global roles " + " ".join(summary.global_roles))
    if summary.ignored:
        lines.append(f"ignored      {len(summary.ignored)} buffer tensor(s)")
    if summary.unassigned:
        lines.append(f"unassigned   {len(summary.unassigned)}: " + ", ".join(summary.unassigned[:5]) + (" ..." if len(summary.unassigned) > 5 else ""))
    if summary.tokenizer:
        lines.append(f"tokenizer    {summary.tokenizer['size']:,} tokens from {summary.tokenizer['path']} "
                     f"({summary.tokenizer['kind']}, {summary.tokenizer['encoding']})")
    if summary.hub:
        lines.append(f"source       {hub_line(summary.hub)}")
    if summary.gguf:
        types = ", ".join(f"{kind} x{count}" for kind, count in summary.gguf["tensor_types"].items())
        lines.append(f"gguf         architecture {summary.gguf['architecture']}; stored as {types} (read dequantised)")
    lines.append("files")
    lines += [f"  {f.path}  {f.role}  {f.bytes:,} bytes  sha256 {f.sha256 or '(not computed)'}" for f in summary.files]
    lines += [f"warning: {w}" for w in summary.warnings]
    return "\n".join(lines)


def format_members(population: Population) -> str:
    """`audit baseline list`: the members, the digest, and what needs a refresh."""
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


def format_matrix(population: Population, methods: Sequence[str]) -> str:
    """`audit baseline matrix`: each method's similarity between every pair of members."""
    import numpy as np

    names = sorted(population.members)
    blocks = []
    for method in methods:
        table = population.pair_table(method)
        width = max(7, *(len(n) for n in names))
        lines = [f"{method}: {len(table.pairs)} comparable pair(s)"
                 + (f", {len(table.skipped)} not comparable" if table.skipped else ""),
                 " " * width + " " + " ".join(n[:7].rjust(7) for n in names)]
        for name, row in zip(names, table.matrix(names)):
            lines.append(name.ljust(width) + " " + " ".join("      ." if np.isnan(v) else f"{v:7.3f}" for v in row))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
