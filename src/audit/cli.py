"""The `audit` command: parse, call the library, format.  Nothing else lives here."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shlex
import signal
import sys
import warnings
from pathlib import Path
from typing import Sequence

from audit import DEFAULT_ALPHA, __version__
from audit.errors import AuditError, ExitCode, InternalError, Interrupted

# Every command imports what it needs inside its handler: `audit --help` and
# `audit inspect` must not pay for weasyprint, pyhanko, matplotlib or statsmodels.


def _inspect(args: argparse.Namespace) -> int:
    from audit.checkpoint import open_checkpoint
    from audit.format.json import summary_doc
    from audit.format.text import format_summary
    from audit.inspection import summarize
    from audit.roles import assign_roles

    with open_checkpoint(args.path) as checkpoint:
        roles = assign_roles(checkpoint, args.mapping)
        summary = summarize(checkpoint, roles, hashes=not args.no_hash, check_finite=args.check_finite)
    print(json.dumps(summary_doc(summary), indent=2) if args.json else format_summary(summary))
    return 0


PASSPHRASE_ENV = "AUDIT_PASSPHRASE"


def _passphrase(env: str, what: str, confirm: bool = False) -> str | None:
    """From the environment variable, else a prompt on a terminal; never from the command line."""
    if env in os.environ:
        return os.environ[env]
    if not sys.stdin.isatty():
        return None
    value = getpass.getpass(f"passphrase for {what}: ")
    if confirm and getpass.getpass("again: ") != value:
        raise AuditError("the two passphrases differ")
    return value


def _keygen(args: argparse.Namespace) -> int:
    from audit.signature import keygen

    passphrase = _passphrase(args.passphrase_env, "the new PKCS#12 file", confirm=True)
    if not passphrase:
        raise AuditError(f"no passphrase: set {args.passphrase_env} or run on a terminal to be prompted")
    made = keygen(args.name, args.org, args.out, passphrase, email=args.email, days=args.days)
    print(f"signing key and certificate: {made.pkcs12_path}")
    print(f"certificate (give to verifiers as --trust): {made.certificate_path}")
    print(f"subject {made.info.subject}; self-signed; SHA-256 fingerprint {made.info.sha256_fingerprint}")
    return 0


def _method_names(items: Sequence[str] | None) -> list[str] | None:
    return [n for item in items or [] for n in item.split(",") if n] or None


def _compare(args: argparse.Namespace) -> int:
    from audit.format.text import format_audit, format_comparison

    names = _method_names(args.methods)
    if args.baseline is None:
        if args.alpha is not None:
            args.error("--alpha needs --baseline: without a population no verdict is made, so there is nothing to decide at alpha")
        from audit.compare import compare_models
        from audit.methods import tunable

        params = tunable(names, budget=args.budget) if args.budget is not None else None
        if params == {}:
            args.error("--budget: none of the chosen methods has a fingerprint budget")
        comparison = compare_models(args.a, args.b, methods=names, seed=args.seed or 0, params=params,
                                    hash_cache=_hash_cache(args))
        if args.json:
            from audit.format.json import comparison_doc, write_json

            write_json(args.json, comparison_doc(comparison))
        print(format_comparison(comparison))
        return 0
    if args.budget is not None:
        args.error("--budget cannot be used with --baseline: the population's fingerprints were made with the default budget")
    from audit.auditor import run_audit

    audit = run_audit(args.a, args.b, baseline=args.baseline, methods=names, seed=args.seed, alpha=args.alpha,
                      hash_cache=_hash_cache(args), plan=_plan_file(args.plan))
    if args.json:
        from audit.format.json import audit_doc, write_json

        write_json(args.json, audit_doc(audit))
    print(format_audit(audit))
    return 0


def _alpha(args: argparse.Namespace) -> float:
    return DEFAULT_ALPHA if args.alpha is None else args.alpha


def _plan_file(path: str | None):
    from audit.evidence.plan import Plan

    return Plan.load(path) if path else None


def _plan(args: argparse.Namespace) -> int:
    from audit.auditor import write_plan

    plan = write_plan(args.out, baseline=args.baseline, methods=_method_names(args.methods), alpha=_alpha(args),
                      seed=args.seed)
    print(f"analysis plan: {args.out}")
    print(f"sha256 {plan.digest}, written {plan.created}")
    print(f"methods {', '.join(plan.methods)}; alpha {plan.alpha:g}; seed {plan.seed}; population "
          f"{plan.population_name or 'none'} {plan.population or ''}".rstrip())
    print(f"comparability: {plan.rule.describe()}")
    return 0


def _baseline(args: argparse.Namespace) -> int:
    from audit.baselines import Population
    from audit.format.text import format_matrix, format_members, format_outdated

    if args.action == "add":
        from audit.baselines.store import MANIFEST
        from audit.files import is_regular

        new_only = [flag for flag, value in (("--population-name", args.name), ("--description", args.description),
                                             ("--seed", args.seed)) if value is not None]
        if new_only and is_regular(Path(args.dir) / MANIFEST):
            args.error(f"{', '.join(new_only)} only set up a new population; {args.dir} already is one")
        population = Population.open_or_create(args.dir, name=args.name, seed=args.seed or 0,
                                               description=args.description or "")
        added = population.add(args.models, names=args.member_names, source=args.source or "", licence=args.licence or "",
                               notes=args.notes or "", mapping=args.mapping, scheduler=args.scheduler, workers=args.workers)
        print(f"added {len(added)} model(s) to '{population.name}' ({len(population.members)} in all): "
              + ", ".join(m.name for m in added))
        print(format_outdated(population), end="")
        return 0
    if args.action in BUNDLE_ACTIONS:
        return _bundle(args)
    if args.action == "migrate":
        population = Population.migrate(args.dir, args.models, workers=args.workers)
        print(f"population '{population.name}' is in the current format; digest {population.digest}")
        return 0
    population = Population.open(args.dir)
    if args.action == "refresh":
        done = population.refresh(args.models, mapping=args.mapping, scheduler=args.scheduler, workers=args.workers)
        print(f"fingerprinted {len(done)} member(s) of '{population.name}' again: " + ", ".join(m.name for m in done))
        print(format_outdated(population), end="")
    elif args.action == "list":
        print(format_members(population))
    else:
        from audit.compare import method_list

        print(format_matrix(population, method_list(_method_names(args.methods))))
    return 0


BUNDLE_ACTIONS = ("export", "import")


def _bundle(args: argparse.Namespace) -> int:
    from audit.baselines.bundle import export_bundle, import_bundle
    from audit.signature import load_certificates, load_pkcs12

    if args.action == "export":
        key = load_pkcs12(args.p12, _passphrase(args.passphrase_env, str(args.p12))) if args.p12 else None
        info = export_bundle(args.dir, args.out, key=key)
        print(f"bundle: {info.path} ('{info.name}', {info.members} members, {info.fingerprints} fingerprints)")
    else:
        info = import_bundle(args.bundle, args.dir, trust=load_certificates(args.trust) if args.trust else None)
        print(f"imported '{info.name}' into {args.dir}: {info.members} members, {info.fingerprints} fingerprints, "
              "every SHA-256 and the digest checked")
    print(f"population digest {info.digest}")
    if info.signer is not None:
        print(f"signed by {info.signer.subject}, SHA-256 fingerprint {info.signer.sha256_fingerprint}")
        print(f"trusted: {info.trusted}" if info.trusted else "not checked against a trusted certificate (give --trust)")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from audit.auditor import evaluate_statistic
    from audit.format.text import format_evaluation

    result = evaluate_statistic(args.method, args.statistic, baseline=args.baseline, depths=args.depth,
                                widths=args.width or (), alpha=_alpha(args))
    print(format_evaluation(result))
    return 0


def _scan(args: argparse.Namespace) -> int:
    from audit.auditor import scan
    from audit.format.text import format_scan

    rows = scan(args.suspect, args.candidates, baseline=args.baseline, methods=_method_names(args.methods),
                seed=args.seed, alpha=_alpha(args), hash_cache=_hash_cache(args))
    print(format_scan(rows, _alpha(args)))
    return 0


def _signer(args: argparse.Namespace):
    from audit.signature import load_pem, load_pkcs12

    if args.p12:
        if args.key or args.cert or args.key_encrypted:
            args.error("--p12 holds the key and certificate: give it alone, or --key with --cert instead")
        return load_pkcs12(args.p12, _passphrase(args.passphrase_env, str(args.p12)))
    if args.key and args.cert:
        return load_pem(args.key, args.cert, _passphrase(args.passphrase_env, str(args.key)) if args.key_encrypted else None)
    if args.key or args.cert or args.key_encrypted:
        args.error("--key and --cert go together (and --key-encrypted only with them)")
    raise AuditError("signing needs --p12 FILE, or --key FILE with --cert FILE")


def _report(args: argparse.Namespace) -> int:
    from audit.auditor import run_audit
    from audit.report.build import check_case_id, write_report

    key = _signer(args)  # before the long computation: a wrong passphrase fails fast, and nothing is written
    default = f"{Path(args.a).name}-vs-{Path(args.b).name}".replace("@", "-")  # "org/name@rev" ids too
    case_id = check_case_id(args.case_id or default)
    audit = run_audit(args.a, args.b, baseline=args.baseline, methods=_method_names(args.methods), seed=args.seed,
                      alpha=args.alpha, plan=_plan_file(args.plan))
    if audit.exploratory:
        raise AuditError(f"a signed report decides by its analysis plan; this analysis differs from it "
                         f"({'; '.join(audit.exploratory)}): run without those options or write a new plan")
    verify = f"audit verify {args.out} --trust CERT.pem --models {args.a} {args.b} --recompute"
    path = write_report(audit, args.out, key=key, case_id=case_id, command="audit " + shlex.join(args.argv),
                        verify_command=verify, timestamp_url=args.tsa)
    print(f"report: {path}")
    print(f"verdict at alpha {audit.verdict.alpha:g}: {audit.verdict.headline}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from audit.demo import run_demo

    result = run_demo(args.out)
    print(f"demo: audited {result.pair[0]} vs {result.pair[1]} against baseline '{result.baseline}'")
    print(f"verdict: {result.verdict}")
    print(f"report: {result.report}  (signed with a demo key, labelled as such in the PDF)")
    print(f"verify: audit verify {result.report} --trust {result.certificate} --recompute")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from audit.report.verification import verify_audit_report

    if args.baseline is not None and not args.recompute:
        args.error("--baseline is only read by --recompute")
    checks = verify_audit_report(args.report, trust=args.trust or (), models=args.models, recompute=args.recompute,
                                 baseline=args.baseline)
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {check.message}")
    passed = all(check.ok for check in checks)
    print("verified: every check passed" if passed else "NOT verified")
    return ExitCode.OK if passed else ExitCode.NOT_VERIFIED


def _hash_cache(args: argparse.Namespace):
    from audit.checkpoint.hashing import hash_cache_from

    return hash_cache_from(args.hash_cache)


def _hash_cache_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hash-cache", action="store_true",
                        help="reuse SHA-256 of unchanged files from the user cache dir (also: AUDIT_HASH_CACHE=1); "
                             "results mark each cached hash; signed reports always hash fresh")


def _audit_options(parser: argparse.ArgumentParser) -> None:
    """Options of every command that runs an audit (compare, scan, report)."""
    parser.add_argument("--methods", nargs="+", metavar="NAME", help="methods to run (default: all), e.g. pcs norm")
    parser.add_argument("--baseline", metavar="DIR", help="baseline population of independently trained models")
    parser.add_argument("--alpha", type=float, help=f"significance level (default: the plan's, else {DEFAULT_ALPHA})")
    parser.add_argument("--seed", type=int, help="seed of every random choice (default: the plan's, or the baseline's, or 0)")


def _command(commands, name: str, run, **kwargs) -> argparse.ArgumentParser:
    """A sub-command whose handler is ``run``; ``args.error`` refuses flags that mean nothing together."""
    parser = commands.add_parser(name, **kwargs)
    parser.set_defaults(run=run, error=parser.error)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audit", description="Statistical audit of model provenance.")
    parser.add_argument("--version", action="version", version=f"audit {__version__}")
    parser.add_argument("--verbose", action="store_true",
                        help="on an error, show the original exception and its traceback (for bug reports)")
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = _command(commands, "inspect", _inspect, help="show a checkpoint's family, shapes, roles and file hashes")
    inspect.add_argument("path", help="a .safetensors file, a model directory or a shard index")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.add_argument("--mapping", metavar="FILE", help="role mapping (JSON) for architectures not built in")
    inspect.add_argument("--check-finite", action="store_true", help="scan every float tensor for NaN/Inf")
    inspect.add_argument("--no-hash", action="store_true", help="skip SHA-256 of the files")

    compare = _command(commands, "compare", _compare, help="test whether one model's weights derive from the other's")
    compare.add_argument("a", help="model A: a .safetensors file, a model directory or a shard index")
    compare.add_argument("b", help="model B")
    _audit_options(compare)
    _hash_cache_option(compare)
    compare.add_argument("--json", metavar="FILE", help="also write the results document (JSON) to FILE")
    compare.add_argument("--plan", metavar="FILE", help="decide by this analysis plan (without one: exploratory, no verdict)")
    compare.add_argument("--budget", type=int, metavar="BYTES",
                         help="fingerprint byte budget of the methods that have one (larger: more power; not with --baseline)")

    plan = _command(commands, "plan", _plan, help="write a pre-registered analysis plan before reading any model")
    plan.add_argument("--out", required=True, metavar="FILE", help="where to write the plan (JSON)")
    plan.add_argument("--baseline", metavar="DIR", help="the baseline population the plan commits to (by digest)")
    plan.add_argument("--methods", nargs="+", metavar="NAME", help="methods that count (default: all)")
    plan.add_argument("--alpha", type=float, help=f"significance level (default {DEFAULT_ALPHA})")
    plan.add_argument("--seed", type=int, help="seed of every random choice (default 0, or the baseline's)")

    baseline = _command(commands, "baseline", _baseline, help="build and inspect baseline populations of independent models")
    actions = baseline.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="fingerprint models and add them to a population (created if new)")
    add.add_argument("dir", help="population folder")
    add.add_argument("models", nargs="+", help="checkpoints of independently trained models")
    add.add_argument("--name", dest="member_names", nargs="+", metavar="NAME", help="member names (default: folder names)")
    add.add_argument("--population-name", dest="name", help="name of a new population (default: folder name)")
    add.add_argument("--description", help="what a new population is")
    add.add_argument("--seed", type=int, help="fingerprint seed of a new population (default 0)")
    add.add_argument("--source", help="where the models come from")
    add.add_argument("--licence", help="their licence")
    add.add_argument("--notes", help="why they are independent of each other")
    refresh = actions.add_parser("refresh", help="fingerprint members again (after a method's fingerprint changed)")
    refresh.add_argument("dir", help="population folder")
    refresh.add_argument("models", nargs="+", help="the members' checkpoints (matched to members by SHA-256)")
    for sub in (add, refresh):
        sub.add_argument("--mapping", metavar="FILE", help="role mapping for architectures not built in")
        sub.add_argument("--workers", type=int, help="local processes (default: $AUDIT_WORKERS, else all cores)")
        sub.add_argument("--scheduler", metavar="ADDRESS", help="run on a Dask distributed cluster")
    migrate = actions.add_parser("migrate", help="upgrade a population made by an earlier release (fingerprints kept)")
    migrate.add_argument("dir", help="population folder")
    migrate.add_argument("models", nargs="*", help="members' checkpoints, to record their tensor content hash")
    migrate.add_argument("--workers", type=int, help="local processes (default: $AUDIT_WORKERS, else all cores)")
    export = actions.add_parser("export", help="write a population to one bundle file (optionally signed)")
    export.add_argument("dir", help="population folder")
    export.add_argument("out", help="bundle file to write")
    export.add_argument("--p12", metavar="FILE", help="sign with this PKCS#12 key and certificate (from `audit keygen`)")
    export.add_argument("--passphrase-env", default=PASSPHRASE_ENV, metavar="VAR",
                        help=f"environment variable holding the passphrase (default {PASSPHRASE_ENV}; else a prompt)")
    import_ = actions.add_parser("import", help="check a bundle and create a population folder from it")
    import_.add_argument("bundle", help="bundle file")
    import_.add_argument("dir", help="new population folder")
    import_.add_argument("--trust", nargs="+", metavar="CERT", help="require a signature by (or issued by) these certificates")
    for action, text in (("list", "list the members"), ("matrix", "pairwise similarity per method")):
        sub = actions.add_parser(action, help=text)
        sub.add_argument("dir", help="population folder")
        if action == "matrix":
            sub.add_argument("--methods", nargs="+", metavar="NAME", help="methods (default: all)")

    evaluate = _command(commands, "evaluate", _evaluate, help="evaluate a reported statistic against a population's null")
    evaluate.add_argument("--method", required=True, help="method that produced the number, e.g. attn-std")
    evaluate.add_argument("--statistic", type=float, required=True, help="the reported value, e.g. 0.927")
    evaluate.add_argument("--baseline", required=True, metavar="DIR", help="baseline population folder")
    evaluate.add_argument("--depth", type=int, nargs="+", metavar="L", required=True, help="depths of the models in the case")
    evaluate.add_argument("--width", type=int, nargs="+", metavar="D", help="their residual widths, when known")
    evaluate.add_argument("--alpha", type=float, help=f"significance level (default {DEFAULT_ALPHA})")

    scan_ = _command(commands, "scan", _scan, help="rank candidate parents of a suspect (Benjamini-Hochberg across candidates)")
    scan_.add_argument("suspect")
    scan_.add_argument("candidates", nargs="+", help="candidate checkpoints")
    _audit_options(scan_)
    _hash_cache_option(scan_)

    report = _command(commands, "report", _report, help="audit a pair and write the signed PDF report")
    report.add_argument("a")
    report.add_argument("b")
    report.add_argument("--out", required=True, metavar="PDF", help="where to write the report (atomically)")
    report.add_argument("--case-id", help="case identifier shown on every page")
    report.add_argument("--plan", required=True, metavar="FILE", help="the pre-registered analysis plan (audit plan); "
                        "--methods, --alpha and --seed must agree with it")
    _audit_options(report)
    report.add_argument("--p12", metavar="FILE", help="PKCS#12 signing key and certificate")
    report.add_argument("--key", metavar="PEM", help="PEM private key (with --cert)")
    report.add_argument("--cert", metavar="PEM", help="PEM certificate, optionally followed by its chain")
    report.add_argument("--key-encrypted", action="store_true", help="the PEM key needs a passphrase")
    report.add_argument("--passphrase-env", default=PASSPHRASE_ENV, metavar="VAR",
                        help=f"environment variable holding the passphrase (default {PASSPHRASE_ENV}; else a prompt)")
    report.add_argument("--tsa", metavar="URL", help="RFC 3161 time-stamp authority (PAdES-B-T)")

    verify = _command(commands, "verify", _verify, help="verify a signed report: signature, manifest, models, numbers")
    verify.add_argument("report", help="the signed PDF")
    verify.add_argument("--trust", nargs="+", metavar="CERT", help="trusted certificate(s), e.g. the auditor's")
    verify.add_argument("--models", nargs=2, metavar=("A", "B"), help="re-hash these copies of the audited models")
    verify.add_argument("--recompute", action="store_true", help="re-run the audit and compare every number")
    verify.add_argument("--baseline", metavar="DIR", help="baseline folder, if not where the manifest says (with --recompute)")

    demo = _command(commands, "demo", _demo, help="audit a bundled zoo pair and write a signed demo report")
    demo.add_argument("--out", default="reports/demo.pdf", metavar="PDF", help="report path (default reports/demo.pdf)")

    keys = _command(commands, "keygen", _keygen, help="make a self-signed auditor signing certificate (PKCS#12 + PEM)")
    keys.add_argument("--name", required=True, help="the auditor's name (certificate common name)")
    keys.add_argument("--org", required=True, help="the auditor's organisation")
    keys.add_argument("--out", required=True, metavar="DIR", help="folder for NAME.p12 and NAME.cert.pem")
    keys.add_argument("--email", help="e-mail address in the certificate")
    keys.add_argument("--days", type=int, default=3650, help="validity in days (default 3650)")
    keys.add_argument("--passphrase-env", default=PASSPHRASE_ENV, metavar="VAR",
                      help=f"environment variable holding the passphrase (default {PASSPHRASE_ENV}; else a prompt)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; map every outcome to its exit status (see :class:`audit.errors.ExitCode`).

    The user sees exactly one line on stderr for any failure, never a
    traceback, and no warning before it; ``--verbose`` re-raises the original
    exception (and lets warnings through) for a bug report.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = [a for a in argv if a != "--verbose"]
    if args.verbose:
        return args.run(args)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's overflow/invalid warnings: the checks that follow say it in one line
            return args.run(args)
    except AuditError as exc:
        error = exc
    except KeyboardInterrupt:
        error = Interrupted()
    except BrokenPipeError:  # the reader (`| head`) left: say nothing, exit as a SIGPIPE'd program does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail again
        return 128 + signal.SIGPIPE
    except Exception as exc:  # a bug, but the user still gets one line
        error = InternalError(exc)
    print(error.line(), file=sys.stderr)
    return int(error.exit_code)


if __name__ == "__main__":
    sys.exit(main())
