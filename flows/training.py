"""Prefect flow: run the DVC pipeline stage by stage, gate and register each task's model, build the bento.

Runs without a Prefect server (a temporary local API starts): `python -m flows.training`. The stages come
from dvc.yaml through DVC's own graph (shopsight.orchestration.pipeline_stages), each runs as its own task
(`dvc repro --single-item`, so DVC's cache still skips unchanged stages) with retries for transient failures.
A failed stage stops the run before any registration; a challenger that fails the gate is registered but
the champion stays. Deployments (weekly, on demand) are in flows/deploy.py.
"""

from __future__ import annotations

import importlib
import json
import contextlib
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from shopsight import paths
from shopsight.config import PROJECT_ROOT, load_params

# One entry per task: (task name, "module:function" that registers its champion), from shopsight.tasks. Each
# function takes the Params, runs in the project directory, and returns a shopsight.registry.Registration.
from shopsight.tasks import REGISTRATIONS  # noqa: E402


@task(name="dvc-stage", task_run_name="{stage}", retries=2, retry_delay_seconds=10)
def run_dvc_stage(project_dir: str, stage: str, up_to_date: bool = False) -> dict:
    """One DVC stage (`dvc repro --single-item`): skipped by DVC when nothing it depends on changed."""
    from shopsight.orchestration import run_stage

    logger = get_run_logger()
    if up_to_date:
        logger.info("stage %s unchanged (dvc status): skipped", stage)
        return {"stage": stage, "ran": False, "seconds": 0.0}
    result = run_stage(project_dir, stage, on_line=logger.info)
    logger.info("stage %s %s in %.1fs", stage, "ran" if result.ran else "unchanged (skipped by DVC)", result.seconds)
    return {"stage": stage, "ran": result.ran, "seconds": round(result.seconds, 2)}


@task(name="register", task_run_name="register-{task_name}")
def register_task_model(task_name: str, target: str, project_dir: str, params_file: str) -> dict:
    """Gate the challenger against the champion, register it, promote it only if it passes."""
    module, func = target.split(":")
    with contextlib.chdir(project_dir):
        reg = getattr(importlib.import_module(module), func)(load_params(params_file))
    get_run_logger().info("%s: %s -> %s (%s)", task_name, reg.tag, reg.status, reg.reason)
    decision = getattr(reg, "decision", None)
    return {"task": task_name, "tag": reg.tag, "status": reg.status, "reason": reg.reason,
            "promoted": getattr(reg, "promoted", reg.status == "champion"), "registered": getattr(reg, "registered", True),
            "comparison": decision.markdown() if decision is not None else ""}


@task(name="build-bento")
def build_bento_task(project_dir: str) -> str:
    from shopsight.packaging import build_bento

    with contextlib.chdir(project_dir):
        return build_bento(Path(project_dir))


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _comparison_markdown(reason: str, stages: list[dict], registrations: list[dict], bento: str | None) -> str:
    lines = [f"## shopsight training run\n\nTrigger: {reason}\n", "| stage | result | seconds |", "|---|---|---|"]
    lines += [f"| {s['stage']} | {'ran' if s['ran'] else 'unchanged'} | {s['seconds']} |" for s in stages]
    for reg in registrations:
        lines.append(f"\n### {reg['task']}: {reg['tag']} -> **{reg['status']}**\n\n{reg['reason']}\n")
        if reg["comparison"]:
            lines.append(reg["comparison"])
    lines.append(f"\nBento: {bento or 'not rebuilt (no champion changed)'}")
    return "\n".join(lines)


@flow(name="shopsight-training", log_prints=False)
def training_flow(
    project_dir: str = str(PROJECT_ROOT),
    params_file: str = "params.yaml",
    reason: str = "manual run",
    tasks: list[str] | None = None,
    build_bento: bool | None = None,
    dry_run: bool = False,
) -> dict:
    """DVC stages (graph order) -> gate + register each task's model -> bento -> comparison artifact.

    `tasks` limits the registrations (None = all of REGISTRATIONS); `build_bento` None follows params.yaml;
    `dry_run` only reports the stage plan (for checking a deployment end to end without training).
    """
    from shopsight.orchestration import pipeline_stages, stages_to_run
    from shopsight.registry import rollback

    logger = get_run_logger()
    project = Path(project_dir)
    params = load_params(project / params_file)
    orch = params.orchestration
    plan = pipeline_stages(project)
    logger.info("trigger: %s; stages in DVC graph order: %s", reason, [s.name for s in plan])
    if dry_run:
        return {"reason": reason, "dry_run": True, "stages": [s.name for s in plan]}

    stage_task = run_dvc_stage.with_options(retries=orch.stage_retries, retry_delay_seconds=orch.stage_retry_delay_seconds)
    needed = stages_to_run(project, plan)
    stages = [stage_task(project_dir, s.name, s.name not in needed) for s in plan]  # sequential: one DVC repo lock

    registrations = [
        register_task_model(name, target, project_dir, params_file)
        for name, target in REGISTRATIONS
        if tasks is None or name in tasks
    ]
    promoted = [r for r in registrations if r["promoted"]]
    bento = None
    if promoted and (orch.build_bento if build_bento is None else build_bento):
        try:
            bento = build_bento_task(project_dir)
        except Exception:
            # The new champions are not packaged: reinstate the previous ones so serving stays consistent.
            for reg in promoted:
                rollback(reg["task"], reason=f"bento build failed after promoting {reg['tag']}")
            raise
    create_markdown_artifact(key="training-comparison", markdown=_comparison_markdown(reason, stages, registrations, bento))

    by_task = {r["task"]: r for r in registrations}
    return {
        "reason": reason,
        "stages": stages,
        "registrations": by_task,
        "registration": by_task.get("propensity"),
        "metrics": _read_json(project / paths.PROPENSITY_METRICS),
        "drift": _read_json(project / paths.PIPELINE_DRIFT_DIR / "drift_summary.json"),
        "bento": bento,
    }


def _print_summary(result: dict, project_dir: Path) -> None:
    from shopsight.registry import bentoml_home

    print("\n=== shopsight demo: results ===")
    ran = [s["stage"] for s in result["stages"] if s["ran"]]
    print(f"  stages run:     {ran or 'none (all unchanged)'}")
    if result.get("metrics"):
        champion = result["metrics"].get("champion")
        print(f"  propensity candidates (champion chosen on validation: {champion}):")
        for name, m in result["metrics"]["test"].items():
            mark = " <- champion" if name == champion else ""
            print(f"  {name:<26} test ROC-AUC {m['roc_auc']:.4f}  PR-AUC {m['pr_auc']:.4f}{mark}")
        if result["metrics"].get("targets", {}).get("note"):
            print(f"  target:         {result['metrics']['targets']['note']}")
    print(f"  metrics:        {project_dir / paths.HEADLINE_METRICS} per task (`shopsight headline`); full tables in {project_dir / 'metrics'}/<task>.json")
    print(f"  plots:          {project_dir / paths.PROPENSITY_PLOTS}/roc.png, history.png  (`dvc plots show`)")
    print(f"  ingest report:  {project_dir / paths.INGEST_REPORT}; rejects: {project_dir / paths.REJECTS}")
    for reg in result["registrations"].values():
        print(f"  model:          {reg['tag']} ({reg['status']}: {reg['reason']})")
    print(f"  model store:    {bentoml_home()}  (`shopsight models list`)")
    if result.get("bento"):
        print(f"  bento:          {result['bento']}")
    if result.get("drift"):
        print(f"  drift report:   {project_dir / result['drift']['html']}  -> {result['drift']['decision']} ({result['drift']['reason']})")
    print("  serve it:       make serve   (then POST to http://127.0.0.1:3000/predict_propensity)")


if __name__ == "__main__":
    from shopsight.prefect_setup import ensure_prefect_ready

    ensure_prefect_ready()
    outcome = training_flow()
    _print_summary(outcome, PROJECT_ROOT)
