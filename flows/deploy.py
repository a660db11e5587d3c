"""Prefect deployments: weekly retraining, weekly monitoring, and an on-demand retrain for the drift trigger.

Serve them against a Prefect server (see the README, "Scheduled and triggered runs"):

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.deploy

Schedules come from params.yaml `orchestration`. The process stays up and runs each scheduled or triggered
run as a subprocess; Ctrl-C pauses the schedules and stops it. For a Kubernetes work pool use the same
deployments with `.deploy(work_pool_name=...)` (README).
"""

from __future__ import annotations

import argparse
import importlib
import logging
from pathlib import Path
from typing import Any

from shopsight.config import PROJECT_ROOT, load_params

TRAINING_FLOW_NAME = "shopsight-training"
WEEKLY_RETRAIN = "weekly-retrain"
ON_DEMAND_RETRAIN = "on-demand-retrain"
WEEKLY_MONITORING = "weekly-monitoring"
MONITORING_MODULE = "flows.monitoring"
TAGS = ["shopsight"]

log = logging.getLogger(__name__)


def monitoring_flow() -> Any | None:
    """The weekly monitoring flow from flows/monitoring.py, or None (with a logged note) until it exists."""
    from prefect import Flow

    try:
        module = importlib.import_module(MONITORING_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != MONITORING_MODULE:
            raise
        log.warning("%s does not exist yet: the weekly monitoring deployment is skipped", MONITORING_MODULE)
        return None
    flows = [obj for obj in vars(module).values() if isinstance(obj, Flow)]
    preferred = [f for f in flows if getattr(module, "monitoring_flow", None) is f]
    if not flows:
        log.warning("%s defines no Prefect flow: the weekly monitoring deployment is skipped", MONITORING_MODULE)
        return None
    return (preferred or flows)[0]


def _accepted(flow: Any, parameters: dict[str, Any]) -> dict[str, Any]:
    names = set(flow.parameters.properties)
    return {k: v for k, v in parameters.items() if k in names}


def build_deployments(project_dir: str | Path = PROJECT_ROOT, params_file: str = "params.yaml") -> list:
    """The RunnerDeployments: weekly retrain and on-demand retrain (always), weekly monitoring (when it exists)."""
    from prefect.schedules import Cron

    from flows.training import training_flow

    project_dir = str(Path(project_dir).resolve())
    orch = load_params(Path(project_dir) / params_file).orchestration
    base = {"project_dir": project_dir, "params_file": params_file}
    deployments = [
        training_flow.to_deployment(
            name=WEEKLY_RETRAIN,
            schedules=[Cron(orch.retrain_cron, timezone=orch.timezone)],
            parameters={**base, "reason": "weekly schedule"},
            description="Weekly retraining: DVC stages, champion gate, bento.",
            tags=TAGS,
        ),
        training_flow.to_deployment(
            name=ON_DEMAND_RETRAIN,
            parameters={**base, "reason": "on demand"},
            description="Retraining started by the drift check (flows/triggers.py) or by hand.",
            tags=TAGS,
        ),
    ]
    monitoring = monitoring_flow()
    if monitoring is not None:
        deployments.append(
            monitoring.to_deployment(
                name=WEEKLY_MONITORING,
                schedules=[Cron(orch.monitoring_cron, timezone=orch.timezone)],
                parameters=_accepted(monitoring, base),
                description="Weekly drift and quality report; triggers the on-demand retrain when the policy fires.",
                tags=TAGS,
            )
        )
    return deployments


def serve_deployments(project_dir: str | Path = PROJECT_ROOT, params_file: str = "params.yaml") -> None:
    """Register the deployments with the configured Prefect server and run their flow runs (blocks)."""
    from prefect import serve

    serve(*build_deployments(project_dir, params_file))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve shopsight's Prefect deployments (needs PREFECT_API_URL).")
    parser.add_argument("--project-dir", default=str(PROJECT_ROOT), help="the DVC project the flows run in")
    parser.add_argument("--params-file", default="params.yaml")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve_deployments(args.project_dir, args.params_file)


if __name__ == "__main__":
    main()
