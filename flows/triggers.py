"""Start a retraining run from anywhere (the drift check calls `trigger_retrain(reason)`).

With a Prefect server configured (PREFECT_API_URL in the environment or the active profile) the on-demand
deployment from flows/deploy.py runs it, so it shows up on the server and runs where the deployment is
served; without one, the training flow runs right here (a temporary local API starts).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flows.deploy import ON_DEMAND_RETRAIN, TRAINING_FLOW_NAME

ON_DEMAND_DEPLOYMENT = f"{TRAINING_FLOW_NAME}/{ON_DEMAND_RETRAIN}"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainTrigger:
    mode: str  # deployment | direct
    reason: str
    flow_run_id: str | None
    state: str | None  # e.g. Scheduled (not waited for), Completed, Failed
    result: dict[str, Any] | None = None  # the flow's return value when it ran here


def prefect_api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def trigger_retrain(reason: str, *, wait: bool = False, timeout_s: float | None = None, **flow_params: Any) -> RetrainTrigger:
    """Start a retraining run with `reason` attached; extra keyword arguments become flow parameters.

    Deployment mode returns once the run is scheduled (wait=False) or finished (wait=True, up to timeout_s).
    Direct mode runs the training flow to the end; a failed run is reported in `state`, not raised, so the
    caller (the weekly monitoring flow) still finishes its own report.
    """
    parameters = {"reason": reason, **flow_params}
    if prefect_api_url():
        from prefect.deployments import run_deployment

        run = run_deployment(ON_DEMAND_DEPLOYMENT, parameters=parameters, timeout=(timeout_s if wait else 0))
        log.info("retrain triggered on %s: flow run %s (%s): %s", ON_DEMAND_DEPLOYMENT, run.id, run.state_name, reason)
        return RetrainTrigger("deployment", reason, str(run.id), run.state_name)

    from flows.training import training_flow

    log.info("no Prefect server configured: running the training flow here: %s", reason)
    state = training_flow(**parameters, return_state=True)
    result = state.result(raise_on_failure=False) if state.is_completed() else None
    run_id = str(state.state_details.flow_run_id) if state.state_details.flow_run_id else None
    return RetrainTrigger("direct", reason, run_id, state.name, result if isinstance(result, dict) else None)
