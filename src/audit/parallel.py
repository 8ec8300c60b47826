"""Running independent tasks (per model, per shard, per tensor) in parallel.

Locally: a process pool (fingerprinting is numpy-bound and releases the GIL
only in parts).  Beyond one machine: the same tasks on a Dask distributed
cluster, given its scheduler address.  Results always come back in input
order, so a distributed run gives byte-identical output to a local one.  A
progress bar shows on a terminal and stays quiet otherwise.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Iterable, Sequence, TypeVar

from tqdm import tqdm

from audit.errors import AuditError

T = TypeVar("T")
R = TypeVar("R")


def progress(total: int, desc: str) -> tqdm:
    """A tqdm bar on stderr; ``disable=None`` hides it when stderr is not a terminal."""
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
    workers = min(workers or os.cpu_count() or 1, len(items)) if items else 1
    results: list = [None] * len(items)
    with progress(len(items), desc) as bar:
        if workers <= 1:
            for i, item in enumerate(items):
                results[i] = fn(item)
                bar.update()
            return results
        with ProcessPoolExecutor(max_workers=workers) as pool:
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
