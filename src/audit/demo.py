"""`audit demo`: the whole pipeline on a bundled pair, end to end, with a demo key.

It writes an analysis plan (all methods, alpha 0.01, the shipped baseline's
digest), audits a derived pair of the bundled reference zoo by it against the
shipped baseline population (the zoo's independent models), signs with an ephemeral
key whose certificate says it is a demo key, and writes the report and that
certificate, so the printed `audit verify` command can be run as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from audit.atomic import write_atomic
from audit.auditor import run_audit, write_plan
from audit.errors import InputError
from audit.report.build import write_report
from audit.resources import resource_dir
from audit.signature import demo_key
from audit.zoo import load_zoo

# A parent and its narrow fine-tune: a realistic, non-trivial case.  The wheel ships exactly these two
# models of the zoo (pyproject.toml, [tool.hatch.build.targets.wheel.force-include]).
DEMO_PAIR = ("b0", "b0-ft-narrow")


@dataclass(frozen=True)
class DemoResult:
    pair: tuple[str, str]
    baseline: str
    verdict: str
    report: Path
    certificate: Path


def demo_pair(zoo_root: Path) -> tuple[Path, Path]:
    """The demo's two models, checked against the zoo's ground truth (pairs.json calls them derived)."""
    zoo = load_zoo(zoo_root)
    if not any(pair.label == "derived" and {pair.a, pair.b} == set(DEMO_PAIR) for pair in zoo.pairs):
        raise InputError(f"{zoo_root}: pairs.json does not list {DEMO_PAIR[0]} / {DEMO_PAIR[1]} as a derived pair")
    paths = tuple(zoo.model_path(name) for name in DEMO_PAIR)
    if missing := [str(path) for path in paths if not path.is_dir()]:
        raise InputError(f"the demo's zoo models are missing: {', '.join(missing)}")
    return paths


def _shorter(path: Path) -> Path:
    """Relative to the working directory when inside it, so the manifest's paths work on the verifier's clone."""
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def run_demo(out: str | Path = "reports/demo.pdf") -> DemoResult:
    try:
        zoo_root, baseline = resource_dir("zoo"), resource_dir("baselines") / "zoo"
    except FileNotFoundError as exc:
        raise InputError(f"the bundled zoo or baseline is missing ({exc})") from None
    a, b = demo_pair(zoo_root)
    relative = [_shorter(p) for p in (a, b, baseline)]
    key = demo_key()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)  # the default reports/ need not exist where a wheel user runs it
    plan = write_plan(out.with_name(out.stem + "-plan.json"), baseline=relative[2])  # fixed before any model is read
    audit = run_audit(relative[0], relative[1], baseline=relative[2], plan=plan)
    certificate = write_atomic(out.with_name(out.stem + "-cert.pem"), key.certificate_pem)
    command = f"audit demo --out {out}"
    verify = f"audit verify {out} --trust {certificate} --recompute"
    report = write_report(audit, out, key=key, case_id=f"DEMO {a.name} vs {b.name}", command=command, verify_command=verify)
    return DemoResult((str(relative[0]), str(relative[1])), audit.baseline.name, audit.verdict.headline, report, certificate)
