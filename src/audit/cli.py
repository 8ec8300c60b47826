"""The `audit` command: parse, call the library, format.  Nothing else lives here."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from typing import Sequence

from audit import __version__
from audit.checkpoint import open_checkpoint
from audit.compare import compare_models, format_table
from audit.errors import AuditError
from audit.inspection import format_summary, summarize
from audit.roles import assign_roles
from audit.signature import keygen


def _inspect(args: argparse.Namespace) -> int:
    with open_checkpoint(args.path) as checkpoint:
        roles = assign_roles(checkpoint, args.mapping)
        summary = summarize(checkpoint, roles, hashes=not args.no_hash, check_finite=args.check_finite)
    print(json.dumps(summary.to_dict(), indent=2) if args.json else format_summary(summary))
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
    passphrase = _passphrase(args.passphrase_env, "the new PKCS#12 file", confirm=True)
    if not passphrase:
        raise AuditError(f"no passphrase: set {args.passphrase_env} or run on a terminal to be prompted")
    made = keygen(args.name, args.org, args.out, passphrase, email=args.email, days=args.days)
    print(f"signing key and certificate: {made.pkcs12_path}")
    print(f"certificate (give to verifiers as --trust): {made.certificate_path}")
    print(f"subject {made.info.subject}; self-signed; SHA-256 fingerprint {made.info.sha256_fingerprint}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    names = [n for item in args.methods or [] for n in item.split(",") if n]
    params = {name: {"budget": args.budget} for name in ("neuron-match", "robust-match")} if args.budget else None
    comparison = compare_models(args.a, args.b, names or None, seed=args.seed, params=params)
    if args.json:
        comparison.write_json(args.json)
    print(format_table(comparison))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audit", description="Statistical audit of model provenance.")
    parser.add_argument("--version", action="version", version=f"audit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser("inspect", help="show a checkpoint's family, shapes, roles and file hashes")
    inspect.add_argument("path", help="a .safetensors file, a model directory or a shard index")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.add_argument("--mapping", metavar="FILE", help="role mapping (JSON) for architectures not built in")
    inspect.add_argument("--check-finite", action="store_true", help="scan every float tensor for NaN/Inf")
    inspect.add_argument("--no-hash", action="store_true", help="skip SHA-256 of the files")
    inspect.set_defaults(run=_inspect)

    compare = commands.add_parser("compare", help="test whether one model's weights derive from the other's")
    compare.add_argument("a", help="model A: a .safetensors file, a model directory or a shard index")
    compare.add_argument("b", help="model B")
    compare.add_argument("--methods", nargs="+", metavar="NAME", help="methods to run (default: all), e.g. pcs norm")
    compare.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    compare.add_argument("--json", metavar="FILE", help="also write the results document (JSON) to FILE")
    compare.add_argument("--budget", type=int, metavar="BYTES",
                         help="fingerprint byte budget of neuron-match and robust-match (larger: more power)")
    compare.set_defaults(run=_compare)

    keys = commands.add_parser("keygen", help="make a self-signed auditor signing certificate (PKCS#12 + PEM)")
    keys.add_argument("--name", required=True, help="the auditor's name (certificate common name)")
    keys.add_argument("--org", required=True, help="the auditor's organisation")
    keys.add_argument("--out", required=True, metavar="DIR", help="folder for NAME.p12 and NAME.cert.pem")
    keys.add_argument("--email", help="e-mail address in the certificate")
    keys.add_argument("--days", type=int, default=3650, help="validity in days (default 3650)")
    keys.add_argument("--passphrase-env", default=PASSPHRASE_ENV, metavar="VAR",
                      help=f"environment variable holding the passphrase (default {PASSPHRASE_ENV}; else a prompt)")
    keys.set_defaults(run=_keygen)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except AuditError as exc:
        print(f"audit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("audit: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, but the user still gets one line
        print(f"audit: internal error: {exc.__class__.__name__}: {exc} (please report)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
