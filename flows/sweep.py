"""Fan-out of independent work on Dask: a hyperparameter sweep over params.yaml, one candidate per Dask task.

    python -m flows.sweep --set propensity.mlp.learning_rate=0.001,0.003 --set propensity.mlp.dropout=0.1,0.3

Each candidate is the product of the grid (params.yaml `orchestration.sweep` when no --set is given): a copy of
params.yaml with the overrides, trained and evaluated by the same `shopsight train/evaluate` commands the DVC
stages run, in its own directory under artifacts/sweeps/, so candidates never share files. The task runner
is Prefect's DaskTaskRunner: a LocalCluster by default, an existing cluster when `orchestration.dask.address`
or $SHOPSIGHT_DASK_ADDRESS is set (the workers then need the project on shared storage). To keep the winner,
`dvc exp run --set-param key=value` reruns the pipeline with it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, task

from shopsight import paths
from shopsight.config import PROJECT_ROOT, load_params

SWEEP_DIR = paths.ARTIFACTS_DIR / "sweeps"


def expand_grid(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, as {dotted key: value} overrides."""
    if not grid:
        return []
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys (`propensity.mlp.learning_rate`) in a params dict; unknown sections fail validation later."""
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return raw


@task(name="sweep-candidate", task_run_name="candidate-{index}")
def train_candidate(project_dir: str, params_file: str, workdir: str, index: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate one grid point in its own directory; return its overrides, its champion and the champion's
    validation metrics (what the sweep ranks on) and test metrics (reported only)."""
    from shopsight.config import load_params as validate

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    raw = apply_overrides(yaml.safe_load((Path(project_dir) / params_file).read_text()), overrides)
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    validate(work / "params.yaml")  # a bad key fails here with a clear message, not inside training
    features = work / paths.PROPENSITY_FEATURES
    features.parent.mkdir(parents=True, exist_ok=True)
    if not features.exists():
        os.symlink((Path(project_dir) / paths.PROPENSITY_FEATURES).resolve(), features)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for step in (["train", "propensity"], ["evaluate", "propensity"]):
        proc = subprocess.run([sys.executable, "-m", "shopsight", *step], cwd=work, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"candidate {index} {overrides}: `shopsight {' '.join(step)}` failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    metrics = json.loads((work / paths.PROPENSITY_METRICS).read_text())
    champion = metrics["champion"]
    get_run_logger().info("grid point %d %s: champion %s, validation %s", index, overrides, champion, metrics["valid"][champion])
    return {"index": index, "overrides": overrides, "champion": champion, "valid": metrics["valid"][champion],
            "test": metrics["test"][champion], "worker_pid": os.getpid()}


@flow(name="shopsight-sweep")
def sweep_flow(project_dir: str = str(PROJECT_ROOT), params_file: str = "params.yaml", grid: dict[str, list[Any]] | None = None) -> dict:
    """Train every grid point in parallel on the flow's task runner; rank them by the gate metric on VALIDATION (the
    test split is reported, never used to choose: ranking on it would make the chosen score optimistic)."""
    params = load_params(Path(project_dir) / params_file)
    candidates = expand_grid(grid if grid is not None else params.orchestration.sweep)
    if not candidates:
        raise ValueError("the sweep grid is empty: set orchestration.sweep in params.yaml or pass --set key=v1,v2")
    root = Path(project_dir) / SWEEP_DIR / uuid.uuid4().hex[:8]
    futures = [
        train_candidate.submit(project_dir, params_file, str(root / str(i)), i, overrides) for i, overrides in enumerate(candidates)
    ]
    results = [f.result() for f in futures]
    metric = params.registry.gate_for("propensity").metric
    reverse = metric not in params.registry.gate_for("propensity").lower_is_better
    ranked = sorted(results, key=lambda r: r["valid"][metric], reverse=reverse)
    get_run_logger().info("best of %d grid points by validation %s: %s", len(ranked), metric, ranked[0]["overrides"])
    shutil.rmtree(root, ignore_errors=True)  # the metrics are in the result; the candidate models are not kept
    return {"metric": metric, "ranked_on": "valid", "ranked": ranked}


def run_sweep(project_dir: str | Path = PROJECT_ROOT, params_file: str = "params.yaml", grid: dict[str, list[Any]] | None = None) -> dict:
    """The sweep on the Dask task runner configured in params.yaml (LocalCluster, or the cluster at the address)."""
    from shopsight.orchestration import dask_task_runner

    from shopsight.orchestration import prefect_api

    params = load_params(Path(project_dir) / params_file)
    runner = dask_task_runner(params.orchestration.dask)
    with prefect_api():  # Dask workers report task runs to the flow's API, not to temporary servers of their own
        return sweep_flow.with_options(task_runner=runner)(project_dir=str(project_dir), params_file=params_file, grid=grid)


def _parse_set(values: list[str]) -> dict[str, list[Any]] | None:
    if not values:
        return None
    return {key: [yaml.safe_load(v) for v in raw.split(",")] for key, raw in (item.split("=", 1) for item in values)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Hyperparameter sweep on Dask (LocalCluster unless an address is set).")
    parser.add_argument("--project-dir", default=str(PROJECT_ROOT))
    parser.add_argument("--params-file", default="params.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=V1,V2", help="grid values for a dotted params key")
    args = parser.parse_args()
    from shopsight.prefect_setup import ensure_prefect_ready

    ensure_prefect_ready()
    outcome = run_sweep(args.project_dir, args.params_file, _parse_set(args.set))
    for row in outcome["ranked"]:
        print(f"valid {row['valid'][outcome['metric']]:.4f}  test {row['test'][outcome['metric']]:.4f}  {row['champion']}  {row['overrides']}")
