"""Local and Dask execution give the same results, in order."""

from __future__ import annotations

import os

import numpy as np
import pytest

from audit.parallel import fork_map, in_worker, run_tasks
from audit.errors import AuditError, NonFiniteError


def _moments_of_seed(seed: int) -> tuple[int, float]:
    values = np.random.default_rng(seed).standard_normal(10_000)
    return seed, float(values.std())


def test_process_pool_matches_serial_in_order():
    serial = run_tasks(_moments_of_seed, range(6), workers=1)
    pooled = run_tasks(_moments_of_seed, range(6), workers=2)
    assert serial == pooled and [s for s, _ in serial] == list(range(6))


def _square(x: int) -> int:
    return x * x


def _pid(_: int) -> int:
    return os.getpid()


def _fork_map_inside(_: int) -> tuple[bool, list[int]]:
    return in_worker(), sorted(set(fork_map(_pid, range(4), workers=2)))


def test_fork_map_runs_in_workers_but_never_nests():
    assert not in_worker()
    assert fork_map(_square, range(7), workers=2) == [x * x for x in range(7)]
    assert os.getpid() not in fork_map(_pid, range(4), workers=2)
    # inside a run_tasks worker the cores are taken: fork_map stays in that process
    (flag, pids), = run_tasks(_fork_map_inside, [0, 1], workers=2)[:1]
    assert flag and len(pids) == 1


def test_fork_map_runs_meanwhile_here_once_while_the_workers_compute():
    calls = []
    assert fork_map(_pid, range(4), workers=2, meanwhile=lambda: calls.append(os.getpid())) != [os.getpid()] * 4
    assert calls == [os.getpid()]
    assert fork_map(_square, range(3), workers=1, meanwhile=lambda: calls.append("here")) == [0, 1, 4]
    assert calls == [os.getpid(), "here"]


def test_tensor_moments_on_processes_match_serial_and_report_nan(tmp_path):
    import ml_dtypes
    from safetensors.numpy import save_file

    from audit import open_checkpoint
    from audit.checkpoint import moments_of

    rng = np.random.default_rng(5)
    tensors = {f"w{i}": (0.02 * rng.standard_normal((300, 500 + i))).astype(ml_dtypes.bfloat16) for i in range(5)}
    save_file(tensors, tmp_path / "m.safetensors")
    with open_checkpoint(tmp_path / "m.safetensors") as ck:
        views = [ck.tensor(f"w{i}").view() for i in range(5)]
        assert moments_of(views, workers=2, min_bytes=0) == moments_of(views, workers=1)
    tensors["w3"][7, 9] = np.nan
    save_file(tensors, tmp_path / "nan.safetensors")
    with open_checkpoint(tmp_path / "nan.safetensors") as ck:
        with pytest.raises(NonFiniteError, match="'w3' contains 1 NaN"):
            moments_of([ck.tensor(f"w{i}").view() for i in range(5)], workers=2, min_bytes=0)


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
    local = Population.open_or_create(tmp_path / "local", name="p", seed=3)
    local.add(paths[:3], workers=1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        remote = Population.open_or_create(tmp_path / "remote", name="p", seed=3)
        remote.add(paths[:3], scheduler=cluster.scheduler_address)
    assert {n: m.fingerprints for n, m in local.members.items()} == {n: m.fingerprints for n, m in remote.members.items()}
    assert (tmp_path / "local" / "pairs.json").read_bytes() == (tmp_path / "remote" / "pairs.json").read_bytes()


def test_audit_workers_caps_the_pool_and_bad_values_are_one_line(world, tmp_path, monkeypatch, run_cli):
    monkeypatch.setenv("AUDIT_WORKERS", "1")
    assert len(set(fork_map(_pid, range(4)))) == 1 and fork_map(_pid, range(2)) == [os.getpid()] * 2
    monkeypatch.setenv("AUDIT_WORKERS", "two")
    _, paths, _, _ = world
    code, out, err = run_cli("baseline", "add", tmp_path / "pop", paths[0])
    assert code == 2 and err.strip().endswith("AUDIT_WORKERS must be a positive whole number, not 'two'")
    assert not (tmp_path / "pop" / "population.json").exists()
