"""Orchestration helpers: the DVC stage graph (read from DVC itself), running one stage, the Dask task runner.

The Prefect flows in flows/ wire these; the stage list is never written by hand a second time: it comes from
dvc.yaml through DVC's own index, so a stage added to dvc.yaml shows up in the training flow by itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefect_dask import DaskTaskRunner

    from shopsight.config import DaskParams

DASK_ADDRESS_ENV = "SHOPSIGHT_DASK_ADDRESS"


@dataclass(frozen=True)
class StageNode:
    name: str  # DVC's address: `train_propensity`, `train@churn` for foreach stages, `sub/dvc.yaml:stage` in subdirs
    upstream: tuple[str, ...]  # stages whose outputs it depends on


@dataclass(frozen=True)
class StageRun:
    name: str
    ran: bool  # False when DVC found the stage unchanged and skipped it
    seconds: float
    log_tail: str


class StageFailed(RuntimeError):
    """`dvc repro --single-item <stage>` exited non-zero."""


def pipeline_stages(project_dir: Path | str) -> list[StageNode]:
    """The pipeline's stages in an order DVC can run them (every stage after its upstream stages).

    Read from dvc.yaml through DVC's index graph; ties keep the order of dvc.yaml. Stages without a command
    (`.dvc` files of imported data) are left out: there is nothing to run.
    """
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(project_dir)) as repo:

        def address(stage) -> str:
            return _address(stage, repo.root_dir)

        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        stages = [s for s in repo.index.stages if getattr(s, "cmd", None)]
        position = {address(s): i for i, s in enumerate(stages)}
        runnable = graph.subgraph([s for s in graph if getattr(s, "cmd", None)]).reverse(copy=True)
        order = nx.lexicographical_topological_sort(runnable, key=lambda s: position.get(address(s), len(position)))
        return [StageNode(address(s), tuple(sorted(address(d) for d in graph.successors(s) if getattr(d, "cmd", None)))) for s in order]


def _address(stage, root_dir: str) -> str:
    """What `dvc repro --single-item` accepts for a stage when run in the project root."""
    dvcfile = os.path.relpath(stage.dvcfile.path, root_dir)
    return stage.name if dvcfile == "dvc.yaml" else f"{dvcfile}:{stage.name}"


def stages_to_run(project_dir: Path | str, plan: list[StageNode]) -> set[str]:
    """Stages DVC would run now: those whose deps, params or outs changed, and every stage downstream of them.

    One in-process `dvc status` instead of one DVC process per stage keeps a no-op rerun of the flow fast;
    the stages in the returned set still go through `dvc repro --single-item`, which has the final word.
    """
    from dvc.repo import Repo

    with Repo(str(project_dir)) as repo, repo.lock:
        needed = {_address(s, repo.root_dir) for s in repo.index.stages if getattr(s, "cmd", None) and s.changed()}
    for node in plan:  # plan is in graph order: upstream stages come first
        if needed.intersection(node.upstream):
            needed.add(node.name)
    return needed


def _dvc_env() -> dict[str, str]:
    # The stage commands call `python -m shopsight`: the venv's python must come first on PATH.
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def run_stage(project_dir: Path | str, stage: str, on_line: Callable[[str], None] = print, force: bool = False) -> StageRun:
    """`dvc repro --single-item <stage>`: DVC skips it when its deps, params and outs are unchanged.

    Each output line goes to `on_line` (the Prefect logger in the flow). Raises StageFailed on a non-zero exit.
    """
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", stage, *(["--force"] if force else [])]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=project_dir, env=_dvc_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    for raw in proc.stdout:
        line = raw.rstrip()
        if line:
            lines.append(line)
            on_line(line)
    code = proc.wait()
    tail = "\n".join(lines[-40:])
    if code != 0:
        raise StageFailed(f"stage {stage!r}: `dvc repro --single-item {stage}` failed with exit code {code} in {project_dir}:\n{tail}")
    ran = any(line.startswith(f"Running stage '{stage}'") for line in lines)
    return StageRun(stage, ran, time.perf_counter() - start, tail)


def dask_address(params: "DaskParams") -> str | None:
    """The scheduler to use: $SHOPSIGHT_DASK_ADDRESS, else orchestration.dask.address, else None (LocalCluster)."""
    return os.environ.get(DASK_ADDRESS_ENV) or params.address


def dask_task_runner(params: "DaskParams") -> "DaskTaskRunner":
    """Prefect's DaskTaskRunner: an existing cluster when an address is configured, else a fresh LocalCluster."""
    from prefect_dask import DaskTaskRunner

    address = dask_address(params)
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": params.n_workers,
            "threads_per_worker": params.threads_per_worker,
            "processes": True,
            "dashboard_address": None,  # no web UI port to collide with in tests or CI
            "host": "127.0.0.1",
        },
    )


@contextmanager
def prefect_api() -> Iterator[str]:
    """The configured Prefect API URL, or a temporary local server's for the duration of the block.

    A flow without a server starts a temporary API in its own process; tasks shipped to Dask worker processes
    would each start another one. Pinning PREFECT_API_URL to one server makes the workers report to it.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    configured = PREFECT_API_URL.value()
    if configured:
        yield configured
        return
    from prefect.server.api.server import SubprocessASGIServer

    from shopsight.prefect_setup import ensure_prefect_ready

    ensure_prefect_ready()  # database migrated here; the startup timeout is PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS
    server = SubprocessASGIServer()
    server.start()
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        yield server.api_url


def distribution_strategy(name: str):
    """A tf.distribute strategy for `training.distribute`: none (default strategy) or mirrored; multi_worker is refused
    with the command that does train across workers (shopsight.distributed_train)."""
    if name not in ("none", "mirrored", "multi_worker"):
        raise ValueError(f"training.distribute: unknown strategy {name!r}; use none, mirrored or multi_worker")
    if name != "multi_worker":
        import tensorflow as tf

        return tf.distribute.get_strategy() if name == "none" else tf.distribute.MirroredStrategy()
    # Keras 3's Model.fit fails under MultiWorkerMirroredStrategy ("PerReplica ... to a Tensor", keras-team/keras#20585,
    # measured with TF 2.21 / Keras 3): say so here rather than crash inside fit on every worker.
    raise ValueError(
        "training.distribute: multi_worker does not run the training stages' Keras fit (Keras 3 does not support it under "
        "MultiWorkerMirroredStrategy); set training.distribute: none and train across TF_CONFIG workers with "
        "`python -m shopsight.distributed_train mlp recommender --out DIR` (shopsight/distributed_train.py)"
    )
