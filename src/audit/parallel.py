"""Running independent tasks (per model, per shard, per tensor) in parallel.

Locally: a process pool (fingerprinting is numpy-bound and releases the GIL
only in parts).  Beyond one machine: the same tasks on a Dask distributed
cluster, given its scheduler address.  Results always come back in input
order, so a distributed run gives byte-identical output to a local one.  A
progress bar shows on a terminal and stays quiet otherwise.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import TYPE_CHECKING, Callable, Iterable, Sequence, TypeVar

from audit.errors import AuditError

if TYPE_CHECKING:
    from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")

_in_pool = False  # set in run_tasks' worker processes


def _mark_worker() -> None:
    global _in_pool
    _in_pool = True


def cores() -> int:
    """Processes the tool may use: ``$AUDIT_WORKERS`` if set (like ``OMP_NUM_THREADS``), else every core."""
    value = os.environ.get("AUDIT_WORKERS", "")
    if value:
        if not value.isdigit() or int(value) < 1:
            raise AuditError(f"AUDIT_WORKERS must be a positive whole number, not '{value}'")
        return int(value)
    return os.cpu_count() or 1


def in_worker() -> bool:
    """Whether this process is already one of several workers (run_tasks' pool, or a daemonic Dask worker)."""
    return _in_pool or multiprocessing.current_process().daemon


def fork_map(fn: Callable[[T], R], items: Sequence[T], workers: int | None = None, *,
             meanwhile: Callable[[], object] | None = None) -> list[R]:
    """``[fn(x) for x in items]`` on forked worker processes, in order.

    For numpy work made of many short calls, which threads cannot overlap
    (the GIL is taken between calls).  ``fork`` starts workers in
    milliseconds with everything imported; they must only compute.  Runs in
    this process when one worker is asked for, inside a worker (the cores are
    already in use), or where the platform cannot fork.  ``meanwhile`` is
    run here once the workers are forked (or after the items, when they run
    here): what the caller needs next, such as an import, done while this
    process would only wait.
    """
    workers = min(workers or cores(), len(items))
    if workers <= 1 or in_worker() or "fork" not in multiprocessing.get_all_start_methods():
        results = [fn(item) for item in items]
        if meanwhile is not None:
            meanwhile()
        return results
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"),
                             initializer=_mark_worker) as pool:
        pending = pool.map(fn, items)  # with fork, every worker process is started by now
        if meanwhile is not None:
            meanwhile()
        return list(pending)


class _NoBar:
    """What a hidden tqdm bar does (nothing), without importing tqdm: stderr is not a terminal."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None

    def set_postfix_str(self, s: str = "") -> None:
        return None


def progress(total: int, desc: str) -> tqdm | _NoBar:
    """A tqdm bar on stderr when it is a terminal (as tqdm's ``disable=None``), else nothing, and tqdm
    is not imported (a scripted ``compare`` would pay its import for a bar nobody sees)."""
    if not sys.stderr.isatty():
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="task", disable=None, leave=False, dynamic_ncols=True)


def run_tasks(
    fn: Callable[[T], R],
    items: Sequence[T] | Iterable[T],
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    desc: str = "working",
) -> list[R]:
    """``[fn(x) for x in items]``, in parallel, in order.

    ``workers=1`` runs in this process (no pickling); ``scheduler`` sends the
    tasks to a Dask cluster (``pip install '.[dask]'``).
    """
    items = list(items)
    if scheduler:
        return _run_dask(fn, items, scheduler, desc)
    workers = min(workers or cores(), len(items)) if items else 1
    results: list = [None] * len(items)
    with progress(len(items), desc) as bar:
        if workers <= 1:
            for i, item in enumerate(items):
                results[i] = fn(item)
                bar.update()
            return results
        with ProcessPoolExecutor(max_workers=workers, initializer=_mark_worker) as pool:
            futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update()
    return results


def _run_dask(fn: Callable[[T], R], items: list[T], scheduler: str, desc: str, connect_timeout: str = "10s") -> list[R]:
    try:
        from distributed import Client, as_completed as dask_completed
    except ImportError:
        raise AuditError("--scheduler needs Dask: pip install 'model-provenance-audit[dask]'") from None
    try:
        client = Client(scheduler, timeout=connect_timeout)
    except (OSError, TimeoutError) as exc:
        raise AuditError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    with client:
        futures = client.map(fn, items, pure=False)
        index = {future.key: i for i, future in enumerate(futures)}
        results: list = [None] * len(items)
        with progress(len(items), f"{desc} (dask)") as bar:
            for future in dask_completed(futures):
                results[index[future.key]] = future.result()
                bar.update()
        return results
