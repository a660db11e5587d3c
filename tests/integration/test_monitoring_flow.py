"""The weekly monitoring loop for real: simulator shops (no drift / a price increase) whose report week is the
current week, their users' histories sent to a real `bentoml serve` (/predict_propensity, the prediction log it
writes, stopped with SIGTERM), real Evidently reports and workspace, a real Prefect flow run (prefect_test_harness)
whose retrain trigger schedules the on-demand deployment only when the policy fires, the cooldown, and
`evidently ui` serving the workspace on 127.0.0.1."""

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

from monitoring.weekly import last_completed_week_end
from shopsight.config import load_params
from tests.conftest import REPO_ROOT, TINY_PARAMS, deep_update
from tests.integration.servers import free_port

pytestmark = pytest.mark.integration

# The report week is the current ISO week, so the service's wall-clock log timestamps fall inside it; the
# simulated shop starts DRIFT_DAY days before that week's Monday, when its drift starts. (A run that crosses
# Sunday midnight UTC would log into the next week: the module then skips, saying so.)
DRIFT_DAY = 70
DRIFT_AT = last_completed_week_end()  # Monday 00:00 UTC of this week
START = DRIFT_AT - pd.Timedelta(days=DRIFT_DAY)  # a Monday
WEEK_END = (DRIFT_AT + pd.Timedelta(days=7)).date().isoformat()
AS_OF = pd.Timestamp(WEEK_END, tz="UTC") - pd.Timedelta(days=1)  # the served features' cutoff
FEATURES = {**TINY_PARAMS["features"], "n_train_cutoffs": 4}
SCENARIOS = ("none", "price_increase")
SERVICE = "bentos.service:ShopsightService"


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
                        drift_start=drift, truth_cutoffs=[drift], start_date=START.date().isoformat()),
        project / "sim", progress=False,
    )
    events = pd.read_parquet(sim.events_path)
    events.to_parquet(project / "data" / "events.parquet")
    data = build_propensity_dataset(events[events["timestamp"] < START + pd.Timedelta(days=DRIFT_DAY)], FeatureParams(**FEATURES))
    data.to_parquet(project / "data" / "features" / "propensity.parquet")
    data[data["split"] == "train"].drop(columns=["label", "split"]).to_parquet(project / "data" / "reference.parquet")
    return project


def _histories(project: Path, scenario: str) -> tuple[list[dict], pd.DataFrame]:
    """Request bodies' users: everyone the training feature code sees at AS_OF, with their events before it (user ids
    prefixed with the scenario, so one server's log splits by shop), and those users' offline model inputs."""
    from shopsight.config import FeatureParams
    from shopsight.features import build_user_features, feature_columns, model_input

    fp = FeatureParams(**FEATURES)
    events = pd.read_parquet(project / "data" / "events.parquet")
    before = events[events["timestamp"] < AS_OF]
    feats = build_user_features(events, AS_OF, fp)
    expected = pd.DataFrame(model_input(feats, feature_columns(fp.windows_days)), index=f"{scenario}/" + feats.index.astype(str),
                            columns=feature_columns(fp.windows_days))
    users = []
    for uid, rows in before[before["user_id"].isin(feats.index)].groupby("user_id", observed=True):
        users.append({"user_id": f"{scenario}/{uid}", "as_of": AS_OF.isoformat(), "events": [
            {"item_id": r.item_id, "event_type": r.event_type, "timestamp": r.timestamp.isoformat(), "category": r.category,
             "price": None if pd.isna(r.price) else float(r.price), "session_id": r.session_id, "quantity": int(r.quantity)}
            for r in rows.itertuples()]})
    return users, expected


def _skip_if_the_week_rolled_over() -> None:
    """The report week was fixed at collection; a run across Sunday midnight UTC would log into the next week."""
    if last_completed_week_end() != DRIFT_AT:
        pytest.skip("the UTC week rolled over during this module (Sunday midnight): the served log falls outside the "
                    "report week fixed at collection; rerun")


@pytest.fixture(scope="module")
def served_shops(tiny_project, tmp_path_factory):
    """Both shops, their users scored by one real `bentoml serve` (the tiny pipeline's propensity champion; same
    feature windows as these shops), stopped with SIGTERM right after the last answer; each shop's records of
    that one log are copied to its own serving.prediction_log.dir (monitoring/predictions)."""
    import contextlib

    from shopsight.config import load_params
    from shopsight.pipeline import register_propensity
    from tests.integration.servers import bentoml_server

    _skip_if_the_week_rolled_over()
    with contextlib.chdir(tiny_project):
        register_propensity(load_params("params.yaml"))
    root = tmp_path_factory.mktemp("shops")
    shops = {scenario: _shop_project(root, scenario) for scenario in SCENARIOS}
    bodies = {scenario: _histories(project, scenario) for scenario, project in shops.items()}
    log_dir = root / "served"
    answered: dict[str, list[dict]] = {scenario: [] for scenario in SCENARIOS}
    env = {"SHOPSIGHT_PREDICTION_LOG_DIR": str(log_dir)}
    with bentoml_server(SERVICE, cwd=tiny_project, env=env, log_dir=root) as url, httpx.Client(timeout=120) as client:
        for scenario, (users, _) in bodies.items():
            for i in range(0, len(users), 40):
                resp = client.post(f"{url}/predict_propensity", json={"users": users[i : i + 40]})
                assert resp.status_code == 200, resp.text[:2000]
                answered[scenario] += resp.json()
    _skip_if_the_week_rolled_over()
    for path in sorted(log_dir.glob("predictions-*.jsonl")):
        lines = path.read_bytes().splitlines(keepends=True)
        for scenario, project in shops.items():
            mine = [line for line in lines if json.loads(line)["user_id"].startswith(f"{scenario}/")]
            (project / "monitoring" / "predictions").mkdir(parents=True, exist_ok=True)
            (project / "monitoring" / "predictions" / path.name).write_bytes(b"".join(mine))
    return {scenario: (shops[scenario], answered[scenario], bodies[scenario][1]) for scenario in SCENARIOS}


def test_the_served_log_holds_every_answer_with_the_model_inputs(served_shops):
    from shopsight.prediction_log import read_prediction_log

    for project, answered, expected in served_shops.values():
        frame = read_prediction_log(project / "monitoring" / "predictions")
        assert len(frame) == len(answered) == len(expected) and frame["user_id"].is_unique
        assert (frame["endpoint"] == "predict_propensity").all()
        logged = pd.DataFrame(frame["features"].tolist(), index=frame["user_id"].tolist())[expected.columns]
        # the service computed each user's features from the request history as the training code does offline
        pd.testing.assert_frame_equal(logged.loc[expected.index], expected, check_dtype=False, atol=1e-4)
        probs = dict(zip(frame["user_id"], frame["output"].map(lambda o: o["probability"])))
        assert all(probs[a["user_id"]] == pytest.approx(a["probability"]) for a in answered)


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

    with prefect_test_harness(server_startup_timeout=None):  # the session's setting (600 s): a loaded 2-core CI box needs more than 30 s
        deployment = training_flow.to_deployment(name=ON_DEMAND_RETRAIN, parameters={"reason": "on demand"})
        yield deployment.apply()


def test_weekly_flow_fires_on_price_increase_not_on_none_and_respects_cooldown(served_shops, harness_with_retrain_deployment):
    from flows.monitoring import monitoring_flow
    from monitoring.weekly import week_label
    from monitoring.workspace import PROJECT_NAME, open_project

    deployment_id = harness_with_retrain_deployment
    week = week_label(WEEK_END)
    quiet, answered, _ = served_shops["none"]
    n_logged = len(answered)
    result = monitoring_flow(project_dir=str(quiet), week_end=WEEK_END, reference_path=str(quiet / "data" / "reference.parquet"))
    assert result["week"] == week
    assert not result["decision"]["retrain"], result["decision"]
    assert result["action"]["triggered"] is False
    assert _retrain_runs(deployment_id) == []  # nothing ran
    report_dir = quiet / "monitoring" / "reports" / week
    saved = json.loads((report_dir / "weekly_report.json").read_text())
    assert saved["decision"]["retrain"] is False and saved["decision"]["notes"]
    assert {"user_features", "event_mix", "served"} <= set(saved["sources"])
    assert saved["sources"]["served"]["current_rows"] == n_logged  # every answer the server logged this week was read
    assert n_logged >= load_params().monitoring.policy.min_rows  # enough to be judged: the served inputs did not drift
    assert not saved["sources"]["served"]["drifted_counted"], saved["sources"]["served"]
    assert (report_dir / "user_features.html").stat().st_size > 10_000
    assert not (quiet / "monitoring" / "state.json").exists()

    drifted, answered, _ = served_shops["price_increase"]
    drifted_saved = len(answered)
    fired = monitoring_flow(project_dir=str(drifted), week_end=WEEK_END, reference_path=str(drifted / "data" / "reference.parquet"))
    assert fired["decision"]["retrain"], fired["decision"]
    assert "event_price_change" in fired["decision"]["reasons"][0]
    assert fired["action"]["triggered"] and fired["action"]["mode"] == "deployment"
    runs = _retrain_runs(deployment_id)
    assert len(runs) == 1 and f"drift policy, week {week}" in runs[0].parameters["reason"]
    assert fired["sources"]["served"]["current_rows"] == drifted_saved
    state = json.loads((drifted / "monitoring" / "state.json").read_text())
    assert state["last_trigger"].startswith(WEEK_END)

    # the same incident a second time within the cooldown: reported, not retriggered
    again = monitoring_flow(project_dir=str(drifted), week_end=WEEK_END, reference_path=str(drifted / "data" / "reference.parquet"))
    assert not again["decision"]["retrain"] and again["decision"]["suppressed_by_cooldown"]
    assert len(_retrain_runs(deployment_id)) == 1

    # the workspace holds every run's snapshots, with the dashboard
    ws, project = open_project(drifted / "monitoring" / "workspace")
    assert project.name == PROJECT_NAME
    assert len(ws.list_runs(project.id)) == 6  # two runs x (user features, event mix, served)
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
