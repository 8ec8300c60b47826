#!/usr/bin/env python
"""Read each byte once: `audit compare --methods attn-std` against `cat` and against hashing alone.

    .venv/bin/python benchmarks/read_once.py [--layers N] [--workdir DIR] [--repeat K] [--keep]

Builds two independent synthetic bf16 checkpoints with Llama-2-7B's tensor
shapes and sharding (4 GB shards), then, in one run and each command in a fresh
process (start-up included):

- warm: ``cat`` of every byte of both checkpoints (page cache warm) against
  ``audit compare A B --methods attn-std --hash-cache`` with the hash cache
  already filled (target: compare at least 2x faster than cat);
- hash cache cold: ``audit compare A B --methods attn-std`` (every file
  hashed, on background threads, while attn-std reads its tensors) against a
  parallel SHA-256 of the same files alone (``hashlib`` threads, one per file
  up to the cores; target: at most 1.2x), with the page cache warm and, again,
  cold (files dropped from it with posix_fadvise(DONTNEED));
- for reference, ``audit --help`` (start-up alone).

Figures are medians of ``--repeat`` runs, wall time and (less sensitive to
other users of a shared machine) CPU time of the child processes.  The checkpoints are deleted
afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import audit as audit_package
from audit.testing.synth import Dims, make_checkpoint

LLAMA_2_7B = Dims(layers=32, hidden=4096, mlp=11008, heads=32, kv_heads=32, vocab=32000)
SHARD_BYTES = 4_000_000_000
HASH_ALONE = ("import sys; from pathlib import Path; from audit.checkpoint.hashing import hash_files; "
              "hash_files([Path(p) for p in sys.argv[1:]])")


def drop_cache(paths: list[Path]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


CPU: dict[str, float] = {}  # command label -> median CPU seconds (user + system) of the child processes
CPU_MIN: dict[str, float] = {}  # command label -> smallest CPU seconds (least disturbed by other users)


def timed(command: list[str], env: dict, before=None) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, all child processes) of one run."""
    if before is not None:
        before()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed: {done.stderr.strip()[-500:]}")
    return seconds, (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)


def median(command: list[str], env: dict, repeat: int, before=None, label: str = "") -> float:
    """Median wall seconds; the median CPU seconds go to :data:`CPU` under ``label``.

    On a shared machine wall time depends on the other users' load; CPU time
    much less so, so both are printed.
    """
    runs = [timed(command, env, before) for _ in range(repeat)]
    CPU[label] = statistics.median(cpu for _, cpu in runs)
    CPU_MIN[label] = min(cpu for _, cpu in runs)
    return statistics.median(wall for wall, _ in runs)


def build(workdir: Path, dims: Dims) -> tuple[Path, Path]:
    pair = []
    for name, seed in (("A", 1), ("B", 2)):
        path = workdir / name
        if not (path / "config.json").exists():
            shutil.rmtree(path, ignore_errors=True)
            start = time.perf_counter()
            make_checkpoint(path, "llama", dims, dtype="BF16", seed=seed, shard_bytes=SHARD_BYTES,
                            keep_reference=False, tokenizer=True)
            print(f"built {path} in {time.perf_counter() - start:.0f} s", flush=True)
        pair.append(path)
    old = time.time() - 600  # as for any file not written this minute (the cache skips "racy" fresh files)
    for path in pair:
        for file in path.iterdir():
            os.utime(file, (old, old))
    return pair[0], pair[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12, help="layers of Llama-2-7B's 32 to build (default 12)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/audit-read-once"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints for the next run")
    args = parser.parse_args(argv)
    dims = Dims(**{**LLAMA_2_7B.__dict__, "layers": args.layers})
    args.workdir.mkdir(parents=True, exist_ok=True)
    try:
        a, b = build(args.workdir, dims)
        files = sorted(p for m in (a, b) for p in m.iterdir() if p.is_file())
        weights = [p for p in files if p.suffix == ".safetensors"]
        total = sum(p.stat().st_size for p in files)
        cores = os.cpu_count() or 1
        env = {**os.environ, "XDG_CACHE_HOME": str(args.workdir / "cache")}
        env.pop("AUDIT_HASH_CACHE", None)
        shutil.rmtree(args.workdir / "cache", ignore_errors=True)
        # As `pip install` does: the package's bytecode exists before the first run.  Without it, every run
        # under PYTHONDONTWRITEBYTECODE (set on some machines) compiles the whole package again.
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(audit_package.__file__).parent)], check=True)
        audit = [sys.executable, "-m", "audit.cli"]
        compare = [*audit, "compare", str(a), str(b), "--methods", "attn-std"]
        print(f"{args.layers} of 32 Llama-2-7B layers: {len(files)} files, {total / 1e9:.2f} GB in all; {cores} cores", flush=True)

        subprocess.run(["cat", *map(str, files)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
        row = {"layers": args.layers, "files": len(files), "bytes": total, "cores": cores, "repeat": args.repeat}
        row["startup_help_s"] = median([*audit, "--help"], env, args.repeat, label="startup_help")
        row["cat_warm_s"] = median(["cat", *map(str, files)], env, args.repeat, label="cat_warm")
        row["hash_alone_warm_s"] = median([sys.executable, "-c", HASH_ALONE, *map(str, files)], env, args.repeat, label="hash_alone_warm")
        row["compare_cache_cold_warm_s"] = median(compare, env, args.repeat, label="compare_cache_cold_warm")
        timed([*compare, "--hash-cache"], env)  # fills the hash cache
        row["compare_cache_warm_s"] = median([*compare, "--hash-cache"], env, args.repeat, label="compare_cache_warm")
        evict = lambda: drop_cache(files)  # noqa: E731
        row["hash_alone_cold_s"] = median([sys.executable, "-c", HASH_ALONE, *map(str, files)], env, args.repeat, evict, label="hash_alone_cold")
        row["compare_cache_cold_cold_s"] = median(compare, env, args.repeat, evict, label="compare_cache_cold_cold")
        row["cat_cold_s"] = median(["cat", *map(str, files)], env, args.repeat, evict, label="cat_cold")

        row["cpu_s"] = dict(CPU)
        row["cpu_min_s"] = dict(CPU_MIN)
        row["load_average"] = os.getloadavg()
        row["speedup_vs_cat_warm"] = row["cat_warm_s"] / row["compare_cache_warm_s"]
        row["cost_vs_hash_alone_warm"] = row["compare_cache_cold_warm_s"] / row["hash_alone_warm_s"]
        row["cost_vs_hash_alone_cold"] = row["compare_cache_cold_cold_s"] / row["hash_alone_cold_s"]
        for key, command in (("cat_warm", "compare_cache_warm"), ("compare_cache_cold_warm", "hash_alone_warm"),
                             ("compare_cache_cold_cold", "hash_alone_cold")):
            row[f"cpu_ratio_{key}_vs_{command}"] = CPU[key] / CPU[command]
        print(json.dumps(row, indent=1))
        print(f"hash cache warm: compare {row['compare_cache_warm_s']:.2f} s vs cat {row['cat_warm_s']:.2f} s: "
              f"{row['speedup_vs_cat_warm']:.2f}x faster (target >= 2x); CPU {CPU['compare_cache_warm']:.2f} s vs "
              f"{CPU['cat_warm']:.2f} s")
        print(f"hash cache cold, page cache warm: compare {row['compare_cache_cold_warm_s']:.2f} s vs parallel hash "
              f"{row['hash_alone_warm_s']:.2f} s: {row['cost_vs_hash_alone_warm']:.2f}x (target <= 1.2x); CPU "
              f"{CPU['compare_cache_cold_warm'] / CPU['hash_alone_warm']:.2f}x")
        print(f"hash cache cold, page cache cold: compare {row['compare_cache_cold_cold_s']:.2f} s vs parallel hash "
              f"{row['hash_alone_cold_s']:.2f} s: {row['cost_vs_hash_alone_cold']:.2f}x (target <= 1.2x); CPU "
              f"{CPU['compare_cache_cold_cold'] / CPU['hash_alone_cold']:.2f}x")
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
