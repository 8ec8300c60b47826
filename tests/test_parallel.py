"""Local and Dask execution give the same results, in order."""

from __future__ import annotations

import numpy as np
import pytest

from audit.parallel import run_tasks
from audit.errors import AuditError


def _moments_of_seed(seed: int) -> tuple[int, float]:
    values = np.random.default_rng(seed).standard_normal(10_000)
    return seed, float(values.std())


def test_process_pool_matches_serial_in_order():
    serial = run_tasks(_moments_of_seed, range(6), workers=1)
    pooled = run_tasks(_moments_of_seed, range(6), workers=2)
    assert serial == pooled and [s for s, _ in serial] == list(range(6))


def test_dask_cluster_matches_local_run():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        remote = run_tasks(_moments_of_seed, range(6), scheduler=cluster.scheduler_address)
    assert remote == run_tasks(_moments_of_seed, range(6), workers=1)


def test_unreachable_scheduler_is_one_clear_error():
    pytest.importorskip("distributed")
    from audit.parallel import _run_dask

    with pytest.raises(AuditError, match="cannot reach the Dask scheduler"):
        _run_dask(_moments_of_seed, [1], "tcp://127.0.0.1:9", "x", connect_timeout="1s")


def test_population_fingerprints_on_a_dask_cluster_match_local(world, tmp_path):
    distributed = pytest.importorskip("distributed")
    from audit.baselines import Population

    _, paths, _, _ = world
    local = Population.open_or_create(tmp_path / "local", seed=3)
    local.add(paths[:3], workers=1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        remote = Population.open_or_create(tmp_path / "remote", seed=3)
        remote.add(paths[:3], scheduler=cluster.scheduler_address)
    assert {n: m.fingerprints for n, m in local.members.items()} == {n: m.fingerprints for n, m in remote.members.items()}
    assert (tmp_path / "local" / "pairs.json").read_bytes() == (tmp_path / "remote" / "pairs.json").read_bytes()
