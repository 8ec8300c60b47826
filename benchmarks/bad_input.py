#!/usr/bin/env python
"""Bad input at scale: how every malformed input ends, and what the hostile header costs.

    AUDIT_WORKERS=1 .venv/bin/python benchmarks/bad_input.py [--count 2000] [--seed 1] [--workdir DIR]

1. Makes ``--count`` seeded mutants of valid inputs (audit.testing.mutants:
   checkpoints, config/tokenizer/index side files, mappings, populations,
   special files), runs each through ``audit.cli.main`` in this process with
   a 30 s watchdog, and prints the count by outcome and by input kind, and
   the time per case (median, 99th percentile, max).  Good outcomes are only
   "accepted" (the mutant is still valid) and "refused" (exit 2, one line).
2. The red-team's worst header, 1.28 M empty tensors in 100 MB, in a fresh
   process: wall time and peak memory added after start-up of ``audit inspect`` refusing it,
   against the baseline measured in the same run, a plain ``json.loads`` of
   the same header (what reading it used to start with).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from audit.testing.mutants import OUTCOMES, make_mutants, make_seeds, run

EMPTY_TENSORS = 1_280_000


def _fuzz(root: Path, count: int, seed: int) -> None:
    start = time.perf_counter()
    mutants = make_mutants(make_seeds(root / "seeds"), root / "mutants", count, seed=seed)
    made = time.perf_counter() - start
    outcomes = [run(m, timeout=30.0) for m in mutants]
    by_outcome = Counter(o.category for o in outcomes)
    print(f"{count} mutants (seed {seed}), made in {made:.1f} s")
    print("outcome        count")
    for category in OUTCOMES:
        print(f"{category:<14} {by_outcome.get(category, 0):>5}")
    kinds = sorted({o.mutant.kind for o in outcomes})
    print("\nkind         refused accepted other")
    for kind in kinds:
        mine = Counter(o.category for o in outcomes if o.mutant.kind == kind)
        other = sum(n for c, n in mine.items() if c not in ("refused", "accepted"))
        print(f"{kind:<12} {mine['refused']:>7} {mine['accepted']:>8} {other:>5}")
    seconds = sorted(o.seconds for o in outcomes)
    print(f"\nseconds per case: median {statistics.median(seconds):.3f}, p99 {seconds[int(0.99 * (len(seconds) - 1))]:.3f}, "
          f"max {seconds[-1]:.3f}")
    longest = max(len(o.stderr) for o in outcomes)
    print(f"longest error line: {longest} characters")
    for o in outcomes:
        if o.category not in ("refused", "accepted"):
            print(f"BAD {o.category}: {o.mutant.kind} {o.mutant.label!r}: {o.stderr[:200]!r}")


_MEASURE = """
import json, sys, time
def status_mb(key):  # VmHWM (peak) is per address space, so unlike ru_maxrss it does not carry over the parent's
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":")) / 1024
path, mode = sys.argv[1], sys.argv[2]
from audit.cli import main  # imported in both modes, with what inspect imports, so both start from the same memory
import audit.checkpoint, audit.inspection, audit.roles, audit.format.text
ready_mb = status_mb("VmRSS")
start = time.perf_counter()
if mode == "json.loads":
    with open(path, "rb") as f:
        f.read(8)
        json.loads(f.read())
    code = 0
else:
    code = main(["inspect", path])
print(json.dumps({"seconds": time.perf_counter() - start, "code": code, "added_mb": status_mb("VmHWM") - ready_mb}))
"""


def _header_bomb(root: Path) -> None:
    entry = '"blocks.%07d.weight.%s":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}'
    header = ("{" + ",".join(entry % (i, "abcd") for i in range(EMPTY_TENSORS)) + "}").encode()  # ~100 MB, as found
    path = root / "bomb.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    print(f"\nheader of {EMPTY_TENSORS:,} empty tensors, {len(header) / 1e6:.0f} MB (each in a fresh process):")
    results = {}
    for mode in ("json.loads", "audit inspect"):
        done = subprocess.run([sys.executable, "-c", _MEASURE, str(path), mode], capture_output=True, text=True, check=True)
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"  {mode:<14} {results[mode]['seconds']:.2f} s, peak memory +{results[mode]['added_mb']:.0f} MB"
              + (f", exit {results[mode]['code']}: {done.stderr.strip()[:120]}" if mode != "json.loads" else ""))
    base, ours = results["json.loads"], results["audit inspect"]
    print(f"  refusing costs {ours['seconds'] / base['seconds']:.3f}x the time and {ours['added_mb'] / base['added_mb']:.3f}x "
          "the added memory of merely parsing the header")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("AUDIT_WORKERS", "1")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        _fuzz(Path(tmp), args.count, args.seed)
        _header_bomb(Path(tmp))
    print(f"\npeak memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
