#!/usr/bin/env python
"""Fingerprinting throughput and memory at real model sizes.

    .venv/bin/python benchmarks/throughput.py [--shape llama-2-7b|qwen2.5-14b] [--layers N] [--workdir DIR] [--keep]

Builds two synthetic bf16 checkpoints with a real release's tensor shapes and
sharding (B is A plus small independent noise: a stand-in for a fine-tune),
then measures in one run, per method: the tensors it reads, the raw read
throughput of exactly those bytes (page cache cold and warm), its
fingerprint throughput and the ratio of the two, the bytes actually read from
storage (cold), and its peak resident memory (each method in a fresh
process); finally the wall time of a full `audit compare A B`.  Cold runs
drop the files from the page cache with posix_fadvise(DONTNEED).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from audit import assign_roles, open_checkpoint
from audit.checkpoint.safetensors_file import SafetensorsFile
from audit.methods import REGISTRY, Model, get_method
from audit.testing.synth import Dims, make_checkpoint

SHAPES = {  # hidden, MLP, layers, heads, kv heads, vocab
    "llama-2-7b": Dims(layers=32, hidden=4096, mlp=11008, heads=32, kv_heads=32, vocab=32000),
    "qwen2.5-14b": Dims(layers=48, hidden=5120, mlp=13824, heads=40, kv_heads=8, vocab=152064),
}
SHARD_BYTES = 4_000_000_000  # real releases shard at 2-10 GB
CHUNK = 64 << 20


def drop_cache(paths: list[Path]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def peak_rss_bytes() -> int:
    """VmHWM: this process's own peak (ru_maxrss would carry the parent's across exec)."""
    with open("/proc/self/status") as handle:
        return int(next(line for line in handle if line.startswith("VmHWM:")).split()[1]) * 1024


def storage_read_bytes() -> int:
    with open("/proc/self/io") as handle:
        return int(next(line for line in handle if line.startswith("read_bytes:")).split()[1])


def raw_read(ranges: list[tuple[Path, int, int]]) -> float:
    """Seconds to read the given byte ranges with pread into one reused buffer."""
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    start = time.perf_counter()
    for path, offset, length in ranges:
        fd = os.open(path, os.O_RDONLY)
        try:
            done = 0
            while done < length:
                got = os.preadv(fd, [view[: min(CHUNK, length - done)]], offset + done)
                if got <= 0:
                    break
                done += got
        finally:
            os.close(fd)
    return time.perf_counter() - start


def touched_ranges(path: Path, method: str, seed: int) -> list[tuple[Path, int, int]]:
    """The tensors a method's extraction maps (recorded by wrapping the file's array access, in this process)."""
    seen: dict[tuple[str, str], tuple[Path, int, int]] = {}
    original = SafetensorsFile.array

    def recording(self, entry):
        seen[(str(self.path), entry.name)] = (self.path, self.data_start + entry.begin, entry.end - entry.begin)
        return original(self, entry)

    SafetensorsFile.array = recording
    os.environ["AUDIT_WORKERS"] = "1"  # no worker processes: they would map the files out of sight
    try:
        with open_checkpoint(path) as checkpoint:
            get_method(method).extract(Model(assign_roles(checkpoint), checkpoint.vocab, checkpoint.vocabulary), seed)
    finally:
        SafetensorsFile.array = original
        del os.environ["AUDIT_WORKERS"]
    return sorted(seen.values(), key=lambda r: (str(r[0]), r[1]))


def _extract_child(path: str, method: str, seed: int, queue) -> None:
    before = storage_read_bytes()
    start = time.perf_counter()
    with open_checkpoint(path) as checkpoint:
        fingerprint = get_method(method).extract(Model(assign_roles(checkpoint), checkpoint.vocab, checkpoint.vocabulary), seed)
    seconds = time.perf_counter() - start
    queue.put({"seconds": seconds, "storage_bytes": storage_read_bytes() - before,  # reaped workers' reads included
               "peak_rss": peak_rss_bytes(), "fingerprint_bytes": fingerprint.nbytes,
               # fork_map's worker processes, if it used any: the largest one's peak
               "worker_peak_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024})


def extract_in_child(path: Path, method: str, seed: int) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_extract_child, args=(str(path), method, seed, queue))
    child.start()
    result = queue.get()
    child.join()
    return result


def build(workdir: Path, dims: Dims) -> tuple[Path, Path]:
    a, b = workdir / "A", workdir / "B"
    for path, perturb in ((a, None), (b, (2, 0.05))):
        if not (path / "config.json").exists():
            shutil.rmtree(path, ignore_errors=True)
            start = time.perf_counter()
            make_checkpoint(path, "llama", dims, dtype="BF16", seed=1, shard_bytes=SHARD_BYTES,
                            keep_reference=False, perturb=perturb, tokenizer=True)
            print(f"built {path} in {time.perf_counter() - start:.0f} s", flush=True)
    return a, b


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, default="llama-2-7b")
    parser.add_argument("--layers", type=int, help="layers to build (default: the release's, if the disk allows)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/audit-throughput"))
    parser.add_argument("--methods", nargs="+", default=list(REGISTRY))
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints for the next run")
    args = parser.parse_args(argv)
    full = SHAPES[args.shape]
    per_layer = 2 * (2 * full.hidden * full.hidden + 2 * full.hidden * full.hidden * (full.kv_heads or full.heads) // full.heads
                     + 3 * full.hidden * full.mlp)
    args.workdir.mkdir(parents=True, exist_ok=True)
    affordable = int(shutil.disk_usage(args.workdir).free * 0.7 // (2 * per_layer))
    layers = min(args.layers or full.layers, affordable)
    dims = Dims(**{**full.__dict__, "layers": layers})
    print(f"shape {args.shape}: {layers} of {full.layers} layers, {per_layer * layers / 1e9:.1f} GB of layer weights per checkpoint")
    a, b = build(args.workdir, dims)
    shards = sorted(a.glob("*.safetensors"))
    rows = []
    for method in args.methods:
        ranges = touched_ranges(a, method, 0)
        needed = sum(length for _, _, length in ranges)
        drop_cache(shards)
        cold_raw = raw_read(ranges)
        warm_raw = raw_read(ranges)
        drop_cache(shards)
        cold = extract_in_child(a, method, 0)
        warm = extract_in_child(a, method, 0)  # the pages are cached now
        rows.append({
            "method": method, "tensors": len(ranges), "bytes_needed": needed,
            "raw_cold_GBps": needed / cold_raw / 1e9, "raw_warm_GBps": needed / warm_raw / 1e9,
            "fingerprint_cold_GBps": needed / cold["seconds"] / 1e9, "fingerprint_warm_GBps": needed / warm["seconds"] / 1e9,
            "ratio_cold": cold_raw / cold["seconds"], "ratio_warm": warm_raw / warm["seconds"],
            "seconds_cold": cold["seconds"], "storage_read_cold": cold["storage_bytes"],
            "peak_rss_MB": max(cold["peak_rss"], warm["peak_rss"]) / 2**20, "fingerprint_bytes": cold["fingerprint_bytes"],
            "worker_peak_rss_MB": max(cold["worker_peak_rss"], warm["worker_peak_rss"]) / 2**20,
        })
        print(json.dumps(rows[-1]), flush=True)
    drop_cache(shards + sorted(b.glob("*.safetensors")))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "audit.cli", "compare", str(a), str(b), "--json", str(args.workdir / "c.json")],
                          capture_output=True, text=True)
    compare_seconds = time.perf_counter() - start
    if done.returncode:
        print(done.stderr, file=sys.stderr)
    print()
    print(f"| method | tensors | bytes needed | raw read cold / warm (GB/s) | fingerprint cold / warm (GB/s) | "
          f"ratio cold / warm | read from storage (cold) | peak RSS (+ each worker) | fingerprint |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['tensors']} | {r['bytes_needed'] / 1e9:.2f} GB | {r['raw_cold_GBps']:.2f} / {r['raw_warm_GBps']:.2f} | "
              f"{r['fingerprint_cold_GBps']:.2f} / {r['fingerprint_warm_GBps']:.2f} | {r['ratio_cold']:.0%} / {r['ratio_warm']:.0%} | "
              f"{r['storage_read_cold'] / 1e9:.2f} GB | {r['peak_rss_MB']:.0f} MB"
              + (f" (+ {r['worker_peak_rss_MB']:.0f} MB)" if r["worker_peak_rss_MB"] else "") + f" | {r['fingerprint_bytes'] / 2**10:.0f} KiB |")
    print(f"\nfull `audit compare A B` (all methods, cold cache): {compare_seconds:.0f} s, exit {done.returncode}")
    if not args.keep:
        shutil.rmtree(args.workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
