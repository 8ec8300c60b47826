"""The `audit` command: parse, call the library, format.  Nothing else lives here."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from audit import __version__
from audit.checkpoint import open_checkpoint
from audit.errors import AuditError
from audit.inspection import format_summary, summarize
from audit.roles import assign_roles


def _inspect(args: argparse.Namespace) -> int:
    with open_checkpoint(args.path) as checkpoint:
        roles = assign_roles(checkpoint, args.mapping)
        summary = summarize(checkpoint, roles, hashes=not args.no_hash, check_finite=args.check_finite)
    print(json.dumps(summary.to_dict(), indent=2) if args.json else format_summary(summary))
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
