"""The weekly monitoring flow for real: simulator shops (no drift / a price increase), real Evidently reports and
workspace, a real Prefect flow run (prefect_test_harness) whose retrain trigger schedules the on-demand
deployment only when the policy fires, the cooldown, and `evidently ui` serving the workspace on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from tests.conftest import REPO_ROOT, TINY_PARAMS, deep_update
from tests.integration.servers import free_port

pytestmark = pytest.mark.integration

START = pd.Timestamp("2026-01-05", tz="UTC")  # a Monday
DRIFT_DAY = 70
WEEK_END = (START + pd.Timedelta(days=DRIFT_DAY + 7)).date().isoformat()
FEATURES = {**TINY_PARAMS["features"], "n_train_cutoffs": 4}


def _shop_project(root: Path, scenario: str, seed: int = 3) -> Path:
    """A project dir with simulated events (drift from DRIFT_DAY) and the reference: train-split features of the
    data before the drift, as the pipeline would have built them for the champion."""
    from shopsight.config import FeatureParams
    from shopsight.features import build_propensity_dataset
    from shopsight.simulator import SimulatorParams, generate_shop

    project = root / scenario
    (project / "data" / "features").mkdir(parents=True)
    params = deep_update(yaml.safe_load((REPO_ROOT / "params.yaml").read_text()), {"features": FEATURES})
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    drift = (START + pd.Timedelta(days=DRIFT_DAY)).date().isoformat()
    sim = generate_shop(
        SimulatorParams(seed=seed, n_users=800, n_items=200, n_categories=8, days=DRIFT_DAY + 7, drift_scenario=scenario,
                        drift_start=drift, truth_cutoffs=[drift]),
        project / "sim", progress=False,
    )
    events = pd.read_parquet(sim.events_path)
    events.to_parquet(project / "data" / "events.parquet")
    data = build_propensity_dataset(events[events["timestamp"] < START + pd.Timedelta(days=DRIFT_DAY)], FeatureParams(**FEATURES))
    data.to_parquet(project / "data" / "features" / "propensity.parquet")
    data[data["split"] == "train"].drop(columns=["label", "split"]).to_parquet(project / "data" / "reference.parquet")
    return project


def _log_served_predictions(project: Path) -> int:
    """What the service would have logged in the report week (shopsight/prediction_log.py format, in the default
    serving.prediction_log.dir): model inputs of users active at the week's end, one prediction each."""
    from shopsight.config import FeatureParams
    from shopsight.features import build_user_features, feature_columns, model_input
    from shopsight.prediction_log import Prediction, PredictionLog

    fp = FeatureParams(**FEATURES)
    columns = feature_columns(fp.windows_days)
    week_end = pd.Timestamp(WEEK_END, tz="UTC")
    feats = build_user_features(pd.read_parquet(project / "data" / "events.parquet"), week_end - pd.Timedelta(days=1), fp)
    x = model_input(feats, columns)
    log = PredictionLog(project / "monitoring" / "predictions")
    now = (week_end - pd.Timedelta(hours=20)).to_pydatetime()
    log.append("predict_propensity", "propensity:test", [
        Prediction(uid, dict(zip(columns, row.tolist())), {"probability": 0.1}, now) for uid, row in zip(feats.index, x)
    ], now=now)
    log.close()
    return len(feats)


def _retrain_runs(deployment_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))


@pytest.fixture(scope="module")
def harness_with_retrain_deployment(tmp_path_factory):
    """A temporary Prefect API with the on-demand retrain deployment registered (nothing serves it: a trigger
    leaves a scheduled flow run carrying the reason, which is what the test checks)."""
    from prefect.testing.utilities import prefect_test_harness

    from flows.deploy import ON_DEMAND_RETRAIN
    from flows.training import training_flow

    with prefect_test_harness(server_startup_timeout=120):  # a loaded 2-core CI box needs more than the default 30 s
        deployment = training_flow.to_deployment(name=ON_DEMAND_RETRAIN, parameters={"reason": "on demand"})
        yield deployment.apply()


def test_weekly_flow_fires_on_price_increase_not_on_none_and_respects_cooldown(tmp_path, harness_with_retrain_deployment):
    from flows.monitoring import monitoring_flow
    from monitoring.workspace import PROJECT_NAME, open_project

    deployment_id = harness_with_retrain_deployment
    quiet = _shop_project(tmp_path, "none")
    n_logged = _log_served_predictions(quiet)
    result = monitoring_flow(project_dir=str(quiet), week_end=WEEK_END, reference_path=str(quiet / "data" / "reference.parquet"))
    assert result["week"] == "2026-W12"
    assert not result["decision"]["retrain"], result["decision"]
    assert result["action"]["triggered"] is False
    assert _retrain_runs(deployment_id) == []  # nothing ran
    report_dir = quiet / "monitoring" / "reports" / "2026-W12"
    saved = json.loads((report_dir / "weekly_report.json").read_text())
    assert saved["decision"]["retrain"] is False and saved["decision"]["notes"]
    assert {"user_features", "event_mix", "served"} <= set(saved["sources"])
    assert saved["sources"]["served"]["current_rows"] == n_logged  # every logged prediction of the week was read
    assert (report_dir / "user_features.html").stat().st_size > 10_000
    assert not (quiet / "monitoring" / "state.json").exists()

    drifted = _shop_project(tmp_path, "price_increase")
    fired = monitoring_flow(project_dir=str(drifted), week_end=WEEK_END, reference_path=str(drifted / "data" / "reference.parquet"))
    assert fired["decision"]["retrain"], fired["decision"]
    assert "event_price_change" in fired["decision"]["reasons"][0]
    assert fired["action"]["triggered"] and fired["action"]["mode"] == "deployment"
    runs = _retrain_runs(deployment_id)
    assert len(runs) == 1 and "drift policy, week 2026-W12" in runs[0].parameters["reason"]
    state = json.loads((drifted / "monitoring" / "state.json").read_text())
    assert state["last_trigger"].startswith(WEEK_END)

    # the same incident a second time within the cooldown: reported, not retriggered
    again = monitoring_flow(project_dir=str(drifted), week_end=WEEK_END, reference_path=str(drifted / "data" / "reference.parquet"))
    assert not again["decision"]["retrain"] and again["decision"]["suppressed_by_cooldown"]
    assert len(_retrain_runs(deployment_id)) == 1

    # the workspace holds every run's snapshots, with the dashboard
    ws, project = open_project(drifted / "monitoring" / "workspace")
    assert project.name == PROJECT_NAME
    assert len(ws.list_runs(project.id)) == 4  # two runs x (user features, event mix)
    assert len(project.dashboard.model().panels) >= 2
    _assert_evidently_ui_serves(drifted / "monitoring" / "workspace")


def _assert_evidently_ui_serves(workspace: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "evidently"), "ui", "--workspace", str(workspace), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "evidently ui exited"
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/api/projects", timeout=2)
                if answer.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "evidently ui did not answer in 60 s"
            time.sleep(0.5)
        assert "shopsight weekly monitoring" in answer.text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
