"""SHA-256 of input files: streamed, in parallel threads, optionally remembered.

Hashing is the costliest step of a comparison that reads only a few tensors:
every byte of every file passes through SHA-256, at under 1 GB/s per core.
Three things keep it from dominating:

- files are hashed on background threads (``hashlib`` releases the GIL
  while it hashes a buffer), one per file up to the number of cores, while
  the methods read their tensors; when the page cache is cold, whichever of
  the two touches a page first reads it from disk, the other finds it in
  memory, so each byte is read from disk once;
- an opt-in :class:`HashCache` remembers a file's digest under its device,
  inode, size and modification time, so a second ``compare`` or ``scan`` of
  an unchanged file hashes nothing.  Every :class:`FileHash` says whether it
  was computed now or taken from the cache; a signed report refuses cached
  hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from audit.errors import AuditError, InputError
from audit.files import open_regular
from audit.parallel import cores

READ_CHUNK = 1 << 22  # 4 MiB per read: large enough that the GIL is rarely taken, small enough to stay in cache
HASH_CACHE_ENV = "AUDIT_HASH_CACHE"
RACY_NS = 2_000_000_000  # a file modified this close to its hashing may change again within one mtime tick
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FileHash:
    """A file's SHA-256 and whether it was computed now (``fresh``) or read from the hash cache."""

    sha256: str
    source: str  # "fresh" | "cache"


class HashCache:
    """Digests of unchanged files, keyed by (st_dev, st_ino, st_size, st_mtime_ns).

    One tiny file per entry under ``root``, written atomically, so concurrent
    runs never see a half-written entry and need no lock.  A file whose
    modification time is within two seconds of when it was hashed is not
    remembered: it could be rewritten, same size, within the file system's
    timestamp granularity (git's "racy clean" problem).  Entries are never
    trusted for signed reports.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @classmethod
    def default(cls) -> HashCache:
        """``$XDG_CACHE_HOME/audit/hashes``, else ``~/.cache/audit/hashes``."""
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return cls(Path(base) / "audit" / "hashes")

    @staticmethod
    def key(stat: os.stat_result) -> str:
        return f"{stat.st_dev}-{stat.st_ino}-{stat.st_size}-{stat.st_mtime_ns}"

    def get(self, stat: os.stat_result) -> str | None:
        try:
            digest = (self.root / self.key(stat)).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return digest if _HEX64.fullmatch(digest) else None

    def put(self, stat: os.stat_result, digest: str, hashed_at_ns: int) -> None:
        """Remember ``digest``; a cache that cannot be written is skipped, never an error."""
        if stat.st_mtime_ns > hashed_at_ns - RACY_NS:
            return
        from audit.atomic import write_atomic

        try:
            self.root.mkdir(parents=True, exist_ok=True)
            write_atomic(self.root / self.key(stat), digest.encode("ascii") + b"\n")
        except (OSError, AuditError):
            pass


def hash_cache_from(enabled: bool | None = None) -> HashCache | None:
    """The hash cache to use: on when ``enabled``, else as ``$AUDIT_HASH_CACHE`` says (off by default)."""
    if enabled:
        return HashCache.default()
    value = os.environ.get(HASH_CACHE_ENV, "").strip().lower()
    if value in ("", "0", "no", "false", "off"):
        return None
    if value in ("1", "yes", "true", "on"):
        return HashCache.default()
    raise AuditError(f"{HASH_CACHE_ENV} must be 1 or 0 (yes/no, true/false, on/off), not '{value}'")


class HashingCancelled(Exception):
    """Hashing was stopped because its checkpoint was closed."""


def sha256_file(path: Path, stop: threading.Event | None = None) -> str:
    """Hex SHA-256 of a file, read in chunks so memory stays flat; ``stop`` ends it early."""
    digest = hashlib.sha256()
    buffer = bytearray(READ_CHUNK)
    view = memoryview(buffer)
    try:
        with open_regular(path, what="input") as handle:
            while n := handle.readinto(buffer):
                digest.update(view[:n])
                if stop is not None and stop.is_set():
                    raise HashingCancelled(str(path))
    except OSError as exc:
        raise InputError(f"{path}: cannot read for hashing: {exc.strerror or exc}") from None
    return digest.hexdigest()


def _stat(path: Path) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read for hashing: {exc.strerror or exc}") from None


def _hash_one(path: Path, cache: HashCache | None, stop: threading.Event) -> FileHash:
    before = _stat(path)
    started = time.time_ns()
    digest = sha256_file(path, stop)
    after = _stat(path)
    if (after.st_size, after.st_mtime_ns, after.st_ino) != (before.st_size, before.st_mtime_ns, before.st_ino):
        raise InputError(f"{path}: the file changed while it was being hashed")
    if cache is not None:
        cache.put(before, digest, started)
    return FileHash(digest, "fresh")


class HashJob:
    """SHA-256 of several files on background threads; :meth:`result` waits for them.

    Files found in the cache are answered at once; the rest are hashed one
    file per thread, at most ``workers`` threads (default: the cores).
    :meth:`cancel` stops the threads at their next chunk (a failed or
    interrupted comparison does not wait for gigabytes of hashing).
    """

    def __init__(self, paths: Sequence[Path], *, cache: HashCache | None = None, workers: int | None = None) -> None:
        self._stop = threading.Event()
        self._futures: dict[Path, Future] = {}
        self._order = list(dict.fromkeys(Path(p) for p in paths))
        pending = []
        for path in self._order:
            cached = cache.get(_stat(path)) if cache is not None else None
            if cached is not None:
                done: Future = Future()
                done.set_result(FileHash(cached, "cache"))
                self._futures[path] = done
            else:
                pending.append(path)
        self._pool = None
        if pending:
            # Largest first: the longest file starts at once, so the threads finish together.
            pending.sort(key=lambda p: -_stat(p).st_size)
            self._pool = ThreadPoolExecutor(max_workers=min(workers or cores(), len(pending)), thread_name_prefix="sha256")
            for path in pending:
                self._futures[path] = self._pool.submit(_hash_one, path, cache, self._stop)
            self._pool.shutdown(wait=False)

    def result(self) -> dict[Path, FileHash]:
        """Every file's hash, in the order given; the first error is raised as it was."""
        return {path: self._futures[path].result() for path in self._order}

    def cancel(self) -> None:
        self._stop.set()
        for future in self._futures.values():
            future.cancel()


def hash_files(paths: Sequence[Path], *, cache: HashCache | None = None, workers: int | None = None) -> dict[Path, FileHash]:
    """SHA-256 of every file, in parallel threads (see :class:`HashJob`)."""
    job = HashJob(paths, cache=cache, workers=workers)
    try:
        return job.result()
    finally:
        job.cancel()


def listing_digest(files: dict[str, str]) -> str:
    """One digest for a whole model: SHA-256 of its ``sha256sum``-style file listing."""
    listing = "".join(f"{digest}  {name}\n" for name, digest in sorted(files.items()))
    return hashlib.sha256(listing.encode()).hexdigest()


CONTENT_CHUNK = 1 << 24  # 16 MiB of a tensor hashed at a time: memory stays flat


def tensor_content_digest(tensors: Iterable[Any]) -> str:
    """Hex SHA-256 of a model's tensors, whatever files hold them: its identity as a population member.

    Sharded or single-file, with or without tokenizer and config, the same
    weights give the same digest; a file hash would not.  ``tensors`` are
    stored tensors (``name``, ``dtype``, ``shape``, ``raw()``); they are
    hashed in name order, each as one line ``name dtype shape nbytes`` (JSON
    encoded, so no name can forge a boundary) followed by its bytes as stored.
    """
    digest = hashlib.sha256(b"audit-tensor-content v1\n")
    for tensor in sorted(tensors, key=lambda t: t.name):
        data = tensor.raw().reshape(-1).view(np.uint8)
        line = json.dumps([tensor.name, tensor.dtype, list(tensor.shape), int(data.size)], ensure_ascii=True)
        digest.update(line.encode() + b"\n")
        release = getattr(getattr(tensor, "file", None), "release", None)  # drop mapped pages once hashed
        for start in range(0, data.size, CONTENT_CHUNK):
            stop = min(data.size, start + CONTENT_CHUNK)
            digest.update(data[start:stop])
            if release is not None:
                release(tensor.entry, start, stop)
    return digest.hexdigest()
