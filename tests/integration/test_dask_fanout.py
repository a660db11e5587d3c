"""Fan-out on Dask: a two-candidate sweep on the tiny project, on a two-worker LocalCluster reached by address."""

from __future__ import annotations

import shutil

import pytest

pytestmark = pytest.mark.integration


def test_sweep_fans_out_over_two_dask_workers(tiny_project_pristine, tmp_path, monkeypatch):
    from distributed import Client, LocalCluster

    from flows.sweep import run_sweep

    tiny_project = tmp_path / "project"  # a copy: the sweep writes into the project, and this test runs in any worker
    shutil.copytree(tiny_project_pristine, tiny_project, symlinks=True, ignore=shutil.ignore_patterns("tmp"))

    grid = {"propensity.mlp.learning_rate": [0.001, 0.01]}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None) as cluster:
        with Client(cluster) as client:
            worker_pids = set(client.run(lambda: __import__("os").getpid()).values())
        monkeypatch.setenv("SHOPSIGHT_DASK_ADDRESS", cluster.scheduler_address)  # "an existing cluster"
        outcome = run_sweep(tiny_project, grid=grid)

    ranked = outcome["ranked"]
    assert sorted(r["overrides"]["propensity.mlp.learning_rate"] for r in ranked) == [0.001, 0.01]
    assert all(0.0 <= r["test"]["roc_auc"] <= 1.0 and 0.0 <= r["valid"]["roc_auc"] <= 1.0 for r in ranked)
    assert outcome["ranked_on"] == "valid" and ranked[0]["valid"]["roc_auc"] >= ranked[1]["valid"]["roc_auc"], "ranked on validation, not test"
    assert {r["worker_pid"] for r in ranked} == worker_pids, "each candidate ran on its own Dask worker"
    assert not list((tiny_project / "artifacts" / "sweeps").glob("*/*")), "candidate directories are cleaned up"


def test_no_address_means_a_local_cluster_with_the_configured_workers(monkeypatch):
    from shopsight.config import DaskParams
    from shopsight.orchestration import dask_task_runner

    monkeypatch.delenv("SHOPSIGHT_DASK_ADDRESS", raising=False)
    runner = dask_task_runner(DaskParams(n_workers=2))
    assert runner.address is None and runner.cluster_kwargs["n_workers"] == 2
    remote = dask_task_runner(DaskParams(address="tcp://127.0.0.1:8786"))
    assert remote.address == "tcp://127.0.0.1:8786"
