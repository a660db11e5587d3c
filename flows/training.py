"""Prefect flow: run the DVC pipeline, register the propensity model, report drift.

Runs without a Prefect server (a temporary local API starts): `python -m flows.training`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from shopsight import paths
from shopsight.config import PROJECT_ROOT, load_params


def _dvc(*args: str, cwd: Path) -> None:
    logger = get_run_logger()
    cmd = [sys.executable, "-m", "dvc", *args]
    logger.info("running %s in %s", " ".join(cmd[2:]), cwd)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            print(line, flush=True)  # DVC/Keras progress stays visible on the console and in the flow logs
    if proc.wait() != 0:
        raise RuntimeError(f"`dvc {' '.join(args)}` failed with exit code {proc.returncode} in {cwd}; see the log above")


@task(name="dvc-repro", retries=1, retry_delay_seconds=5)
def reproduce_pipeline(project_dir: str) -> dict:
    """`dvc repro`: unchanged stages are skipped from DVC's cache."""
    _dvc("repro", cwd=Path(project_dir))
    return json.loads((Path(project_dir) / paths.PROPENSITY_METRICS).read_text())


@task(name="register-propensity")
def register_propensity_model(project_dir: str, params_file: str) -> dict:
    from shopsight.pipeline import register_propensity

    cwd = os.getcwd()
    os.chdir(project_dir)
    try:
        reg = register_propensity(load_params(params_file))
    finally:
        os.chdir(cwd)
    get_run_logger().info("registered %s as %s (%s)", reg.tag, reg.status, reg.reason)
    return {"tag": reg.tag, "status": reg.status, "reason": reg.reason}


@task(name="drift-summary")
def read_drift_summary(project_dir: str) -> dict:
    return json.loads((Path(project_dir) / paths.PIPELINE_DRIFT_DIR / "drift_summary.json").read_text())


@flow(name="shopsight-training", log_prints=False)
def training_flow(project_dir: str = str(PROJECT_ROOT), params_file: str = "params.yaml") -> dict:
    """dvc repro -> register (champion gate) -> drift summary; publishes a Markdown artifact with the results."""
    metrics = reproduce_pipeline(project_dir)
    registration = register_propensity_model(project_dir, params_file)
    drift = read_drift_summary(project_dir)
    rows = "\n".join(f"| {name} | {m['roc_auc']:.4f} | {m['pr_auc']:.4f} |" for name, m in metrics["test"].items())
    create_markdown_artifact(
        key="propensity-evaluation",
        markdown=(
            f"## Purchase propensity (test cutoff {metrics['test_cutoff']})\n\n| model | ROC-AUC | PR-AUC |\n|---|---|---|\n{rows}\n\n"
            f"Registered **{registration['tag']}** as {registration['status']}: {registration['reason']}.\n\n"
            f"Drift: {drift['reason']} -> **{drift['decision']}**."
        ),
    )
    return {"metrics": metrics, "registration": registration, "drift": drift}


def _print_summary(result: dict, project_dir: Path) -> None:
    from shopsight.registry import bentoml_home

    test = result["metrics"]["test"]
    reg = result["registration"]
    print("\n=== shopsight demo: results ===")
    for name, m in test.items():
        print(f"  {name:<22} test ROC-AUC {m['roc_auc']:.4f}  PR-AUC {m['pr_auc']:.4f}")
    print(f"  metrics:        {project_dir / paths.PROPENSITY_METRICS}  (also `dvc metrics show`)")
    print(f"  plots:          {project_dir / paths.PROPENSITY_PLOTS}/roc.png, history.png  (`dvc plots show`)")
    print(f"  ingest report:  {project_dir / paths.INGEST_REPORT}; rejects: {project_dir / paths.REJECTS}")
    print(f"  model:          {reg['tag']} ({reg['status']}) in the BentoML store at {bentoml_home()}  (`shopsight models list`)")
    print(f"  drift report:   {project_dir / result['drift']['html']}  -> {result['drift']['decision']} ({result['drift']['reason']})")
    print("  serve it:       make serve   (then POST to http://127.0.0.1:3000/predict_propensity)")


if __name__ == "__main__":
    outcome = training_flow()
    _print_summary(outcome, PROJECT_ROOT)
