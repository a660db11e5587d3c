"""Prefect flow: the weekly monitoring report, its snapshot in the Evidently workspace, and the retrain trigger.

    python -m flows.monitoring [--week-end 2026-03-23]

For the week that ended (default: the last completed ISO week, or the last complete week of the data when the
events end before it, as the embedded shop's do) it builds the Evidently reports of
monitoring/weekly.py (reference = the champion's training window; current = what the service logged and the
events that arrived; quality of matured predictions), writes HTML + JSON under monitoring/reports/<week>/,
adds the snapshots to the workspace (monitoring/workspace: `evidently ui --workspace monitoring/workspace
--host 127.0.0.1`), and when the policy (params.yaml monitoring.policy) fires, starts a retrain with the
reason attached (flows/triggers.py: the on-demand deployment with a Prefect server, else the training flow
here). The cooldown is persisted in monitoring/state.json. The weekly deployment is in flows/deploy.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from shopsight.config import PROJECT_ROOT, load_params

MONITORING_DIR = Path("monitoring")
WORKSPACE_DIR = MONITORING_DIR / "workspace"
STATE_FILE = MONITORING_DIR / "state.json"


@task(name="weekly-report", cache_policy=NO_CACHE)
def build_report(project_dir: str, params_file: str, week_end: str | None, log_dir: str | None, state: dict,
                 reference_path: str | None = None) -> Any:
    """Evidently reports + policy decision for the week (monitoring/weekly.py)."""
    from monitoring.weekly import run_weekly_monitoring

    import os

    project = Path(project_dir)
    params = load_params(project / params_file)
    # the service's log: the argument, else $SHOPSIGHT_PREDICTION_LOG_DIR, else serving.prediction_log.dir
    log_dir = log_dir or os.environ.get("SHOPSIGHT_PREDICTION_LOG_DIR") or str(project / params.serving.prediction_log.dir)
    report = run_weekly_monitoring(params, project, week_end=week_end, log_dir=Path(log_dir), state=state,
                                   reference_path=Path(reference_path) if reference_path else None)
    get_run_logger().info("%s: %s -> %s", report.week, report.decision.reason, "retrain" if report.decision.retrain else "no action")
    return report


@task(name="workspace-snapshot", cache_policy=NO_CACHE)
def publish(workspace_dir: str, report: Any, ranking_k: int = 10) -> list[str]:
    """Add the week's snapshots to the Evidently workspace (dashboard: drift share and quality over time)."""
    from monitoring.workspace import add_week

    return add_week(workspace_dir, report.snapshots, ranking_k)


@task(name="retrain-trigger", cache_policy=NO_CACHE)
def act_on_decision(report: Any, state_path: str, retrain_parameters: dict[str, Any]) -> dict[str, Any]:
    """Start a retrain with the reason when the policy fired (and persist the cooldown); otherwise nothing runs."""
    from monitoring.policy import record_trigger

    logger = get_run_logger()
    decision = report.decision
    if not decision.retrain:
        logger.info("no retrain: %s", decision.reason)
        return {"triggered": False, "reason": decision.reason, "suppressed_by_cooldown": decision.suppressed_by_cooldown}
    from flows.triggers import trigger_retrain

    reason = f"drift policy, week {report.week}: {decision.reason}"
    logger.warning("retrain triggered: %s", reason)
    run = trigger_retrain(reason, **retrain_parameters)
    info = {"mode": run.mode, "flow_run_id": run.flow_run_id, "state": run.state}
    record_trigger(Path(state_path), decision, report.week, info)
    return {"triggered": True, "reason": reason, **info}


def _markdown(report: Any, action: dict[str, Any]) -> str:
    lines = [f"## shopsight weekly monitoring {report.week}", "", f"Decision: **{'retrain' if report.decision.retrain else 'no action'}**"]
    lines += [f"- {r}" for r in report.decision.reasons] + [f"- {n}" for n in report.decision.notes]
    lines += ["", "| source | rows (ref/cur) | drifted | share |", "|---|---|---|---|"]
    for s in report.sources:
        lines.append(f"| {s.source} | {s.reference_rows}/{s.current_rows} | {', '.join(c.column for c in s.columns if c.drifted) or '-'} | {s.share:.2f} |")
    if report.quality is not None:
        lines.append(f"\nQuality: {report.quality.metric} {report.quality.value} (champion {report.quality.baseline}, {report.quality.rows} matured)")
    if report.recommend_quality is not None:
        rq = report.recommend_quality
        lines.append(f"\nRecommendations: {rq.metric} {rq.value} ({rq.rows} answers with a known next item; {report.recommend_metrics})")
    lines.append(f"\nReports: {report.out_dir}; trigger: {action}")
    return "\n".join(lines)


@flow(name="shopsight-monitoring", log_prints=False)
def monitoring_flow(
    project_dir: str = str(PROJECT_ROOT),
    params_file: str = "params.yaml",
    week_end: str | None = None,
    log_dir: str | None = None,
    act: bool = True,
    retrain_parameters: dict[str, Any] | None = None,
    reference_path: str | None = None,
) -> dict[str, Any]:
    """Weekly report -> workspace snapshot -> retrain trigger (when the policy fires and `act`).

    `week_end`: the day after the week's last day (default: Monday of this week, or of the data's last complete
    week when the events end before it); `log_dir`: the prediction
    log (default: $SHOPSIGHT_PREDICTION_LOG_DIR, else params.yaml serving.prediction_log.dir); `retrain_parameters`: extra training-flow parameters for the triggered run;
    `reference_path`: a reference features Parquet instead of the champion's.
    """
    from monitoring.policy import load_state

    project = Path(project_dir)
    state_path = project / STATE_FILE
    report = build_report(project_dir, params_file, week_end, log_dir, load_state(state_path), reference_path)
    runs = publish(str(project / WORKSPACE_DIR), report, load_params(project / params_file).monitoring.policy.ranking_k)
    if act:
        action = act_on_decision(report, str(state_path), retrain_parameters or {})
    else:
        action = {"triggered": False, "reason": "act=False: report only"}
    create_markdown_artifact(key="weekly-monitoring", markdown=_markdown(report, action))
    return {**report.to_dict(), "json": report.json_path, "workspace_runs": runs, "action": action}


def main() -> None:
    ap = argparse.ArgumentParser(description="Weekly monitoring report and retrain trigger")
    ap.add_argument("--project-dir", default=str(PROJECT_ROOT))
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--week-end", default=None, help="YYYY-MM-DD: the day after the week's last day (default: this Monday, or the Monday after the "
                    "data's last complete week when the events end earlier)")
    ap.add_argument("--log-dir", default=None, help="prediction log directory (default: serving.prediction_log.dir)")
    ap.add_argument("--no-act", action="store_true", help="report only: never trigger a retrain")
    args = ap.parse_args()
    from shopsight.prefect_setup import ensure_prefect_ready

    ensure_prefect_ready()
    result = monitoring_flow(args.project_dir, args.params, args.week_end, args.log_dir, act=not args.no_act)
    print(f"{result['week']}: {'RETRAIN' if result['decision']['retrain'] else 'no action'}; report {result['json']}")
    if args.week_end is None:
        print(f"(week chosen by default: --week-end {str(result['end'])[:10]}; pass --week-end YYYY-MM-DD for another week)")
    print(f"action: {result['action']}")


if __name__ == "__main__":
    main()
