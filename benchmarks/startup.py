#!/usr/bin/env python
"""Start-up cost of the command line: import time of `audit --help` and `audit inspect`.

    .venv/bin/python benchmarks/startup.py [--runs N]

Each figure is the median over N fresh interpreters of the summed
``-X importtime`` of everything the command imports (the interpreter's own
start-up, the same for all rows, is left out).  The baseline, measured in the
same run, imports the libraries that every command used to load at start
(weasyprint, pyhanko, matplotlib, statsmodels, scipy.stats, ml_dtypes) the way
the tool did before they were made lazy.  `inspect` reads a small synthetic
bf16 checkpoint, its files hashed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from audit.testing.synth import Dims, make_checkpoint

HEAVY = ("weasyprint", "pyhanko.sign", "matplotlib.pyplot", "statsmodels.stats.diagnostic", "scipy.stats", "ml_dtypes")
SITE = frozenset({"site", "encodings", "codecs", "io", "abc", "zipimport", "_frozen_importlib_external", "_signal",
                  "encodings.utf_8", "_distutils_hack", "_codecs", "_io", "marshal", "posix", "time", "winreg"})


def import_seconds(code: str) -> float:
    """Summed top-level ``-X importtime`` of ``code`` in a fresh interpreter, interpreter start-up excluded."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src")})
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    total = 0
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        if name.startswith(" ") and not name.startswith("  ") and name.strip() not in SITE and cumulative.strip().isdigit():
            total += int(cumulative)
    return total / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        model = make_checkpoint(Path(work) / "m", "llama", Dims(layers=4, hidden=64, mlp=128, heads=4), seed=1,
                                dtype="BF16").path
        quiet = "import contextlib, io\nfrom audit.cli import main\nwith contextlib.redirect_stdout(io.StringIO()):\n"
        rows = {
            "audit --help": quiet + "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n",
            "audit inspect MODEL": quiet + f"    main(['inspect', {str(model)!r}])\n",
            "baseline: audit.cli + the heavy set at start": "import audit.cli\n" + "".join(f"import {m}\n" for m in HEAVY),
        }
        times = {name: statistics.median(import_seconds(code) for _ in range(args.runs)) for name, code in rows.items()}
    base = times["baseline: audit.cli + the heavy set at start"]
    print(f"import time, median of {args.runs} fresh interpreters (python {sys.version.split()[0]}, {os.cpu_count()} cores)")
    for name, seconds in times.items():
        print(f"  {name:48s} {seconds:6.3f} s   ({seconds / base:5.1%} of the baseline)")


if __name__ == "__main__":
    main()
