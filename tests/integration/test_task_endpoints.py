"""dvc repro trains and evaluates churn and demand (tiny size); their champions answer over a real `bentoml serve`."""

import contextlib
import json

import httpx
import pytest

from shopsight.config import load_params
from tests.integration.servers import bentoml_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registered(tiny_project):
    from shopsight.churn import register_churn
    from shopsight.demand import register_demand
    from shopsight.pipeline import register_propensity

    with contextlib.chdir(tiny_project):
        params = load_params("params.yaml")
        return {"propensity": register_propensity(params), "churn": register_churn(params), "demand": register_demand(params)}


@pytest.fixture(scope="module")
def prediction_log_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("task-log") / "predictions"


@pytest.fixture(scope="module")
def service_url(tiny_project, registered, prediction_log_dir):
    with bentoml_server("bentos.service:ShopsightService", cwd=tiny_project, env={"SHOPSIGHT_PREDICTION_LOG_DIR": str(prediction_log_dir)}) as url:
        yield url


def test_repro_writes_metric_tables_with_baselines(tiny_project):
    params = load_params(tiny_project / "params.yaml")
    churn = json.loads((tiny_project / "metrics/churn.json").read_text())
    assert set(params.churn.candidates) <= set(churn["test"]) and set(params.churn.candidates) <= set(churn["valid"])
    assert churn["champion"] == max(params.churn.candidates, key=lambda n: churn["valid"][n]["roc_auc"]), "chosen on validation"
    assert f"{churn['champion']}_calibrated" in churn["test"] and churn["targets"]["best_reference"] in params.churn.references
    assert "oracle" in churn["test"], churn["oracle_note"]  # the simulator's truth matches the churn horizon
    demand = json.loads((tiny_project / "metrics/demand.json").read_text())
    candidates = load_params(tiny_project / "params.yaml").demand.candidates
    assert set(demand["test"]) == set(demand["valid"]) == set(candidates) and demand["selected_on"] == "valid"
    assert demand["champion"] == demand["model_key"] == min(candidates, key=lambda n: demand["valid"][n]["wape"])
    assert all(v is None or 0 <= v for m in demand["test"].values() for v in m.values())
    prop = json.loads((tiny_project / "metrics/propensity.json").read_text())
    assert {*params.propensity.candidates, f"{prop['champion']}_calibrated", "oracle"} <= set(prop["test"])
    assert prop["selected_on"] == "valid" and prop["champion"] == max(params.propensity.candidates, key=lambda n: prop["valid"][n]["roc_auc"])
    # calibration is monotone: the served probabilities rank users exactly as the champion's own scores
    assert prop["test"][f"{prop['champion']}_calibrated"]["roc_auc"] == pytest.approx(prop["test"][prop["champion"]]["roc_auc"], abs=1e-9)
    for png in ("propensity/reliability.png", "propensity/importance.png", "churn/importance.png", "demand/forecast.png"):
        assert (tiny_project / "plots" / png).stat().st_size > 1000


def _user(uid, explain=None, days=(1, 3, 5)):
    events = [{"item_id": "i1", "event_type": "view", "timestamp": f"2026-03-0{d}T10:00:00Z", "price": 10.0} for d in days]
    user = {"user_id": uid, "events": events, "as_of": "2026-03-10T00:00:00Z"}
    return user if explain is None else {**user, "explain": explain}


def test_churn_risk_batch_with_optional_explanations(service_url, registered):
    body = {"users": [_user("a", explain=True), _user("b", explain=False), {"user_id": "new"}]}
    resp = httpx.post(f"{service_url}/churn_risk", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert [o["user_id"] for o in out] == ["a", "b", "new"]
    assert all(0 <= o["churn_probability"] <= 1 for o in out)
    assert out[0]["model"] == registered["churn"].tag
    assert len(out[0]["reasons"]) == load_params().churn.explain.top_k and out[1]["reasons"] is None
    assert [o["recent_activity"] for o in out] == [True, True, False]


def test_explain_propensity_returns_reasons(service_url):
    resp = httpx.post(f"{service_url}/explain_propensity", json={"users": [_user("a")]}, timeout=60)
    assert resp.status_code == 200, resp.text
    (out,) = resp.json()
    assert 0 <= out["probability"] <= 1 and out["reasons"] and {"feature", "contribution"} <= set(out["reasons"][0])


def test_forecast_demand_from_history_and_from_stored_window(service_url, tiny_project, registered):
    horizon = load_params(tiny_project / "params.yaml").demand.horizon_days
    legend = json.loads((tiny_project / "plots/demand/forecast_legend.json").read_text())
    body = {"series": [
        {"series_id": "x", "level": "item", "history": [0, 1, 0, 2, 1, 0, 3], "start": "2026-03-02"},
        {"series_id": legend["top1"], "level": "category"},
        {"series_id": "never-seen", "level": "item"},
    ]}
    resp = httpx.post(f"{service_url}/forecast_demand", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert [o["history_source"] for o in out] == ["request", "stored", "none"]
    assert all(len(o["units"]) == horizon and min(o["units"]) >= 0 for o in out)
    assert out[0]["dates"][0] == "2026-03-02" and out[1]["model"] == registered["demand"].tag


def test_churn_explain_and_demand_answers_are_logged(service_url, prediction_log_dir, registered):
    from shopsight.prediction_log import read_prediction_log

    churn = httpx.post(f"{service_url}/churn_risk", json={"users": [_user("log-c1"), _user("log-c2", explain=True)]}, timeout=60).json()
    explained = httpx.post(f"{service_url}/explain_propensity", json={"users": [_user("log-e1")]}, timeout=60).json()
    demand = httpx.post(f"{service_url}/forecast_demand", json={"series": [
        {"series_id": "log-s1", "level": "item", "history": [0, 1, 0, 2, 1, 0, 3], "start": "2026-03-02"}]}, timeout=60).json()
    frame = read_prediction_log(prediction_log_dir)
    by_user = frame.dropna(subset=["user_id"]).set_index("user_id")
    for answer in churn:
        record = by_user.loc[answer["user_id"]]
        assert record["endpoint"] == "churn_risk" and record["model"] == registered["churn"].tag
        assert record["output"]["churn_probability"] == pytest.approx(answer["churn_probability"])
        assert record["as_of"].isoformat().startswith("2026-03-10")
    (e,) = explained
    record = by_user.loc["log-e1"]
    assert record["endpoint"] == "explain_propensity" and record["output"]["probability"] == pytest.approx(e["probability"])
    assert record["output"]["reasons"] == [r["feature"] for r in e["reasons"]]
    (d,) = demand
    (series,) = [r for _, r in frame[frame["endpoint"] == "forecast_demand"].iterrows() if r["features"]["series_id"] == "log-s1"]
    assert series["model"] == registered["demand"].tag and series["features"]["history_days"] == 7
    assert series["output"]["units"] == pytest.approx(d["units"], abs=1e-3) and series["output"]["start"] == "2026-03-02"


@pytest.mark.parametrize(
    "endpoint, body, field",
    [
        ("churn_risk", {"users": [{"user_id": "a", "events": [{"item_id": "i", "event_type": "teleport", "timestamp": "2026-01-01"}]}]}, "event_type"),
        ("churn_risk", {"users": [{"user_id": "a", "explain": "maybe"}]}, "explain"),
        ("forecast_demand", {"series": [{"series_id": "c", "history": [1, -1]}]}, "history"),
        ("forecast_demand", {"series": [{"series_id": "c", "level": "galaxy"}]}, "level"),
    ],
)
def test_malformed_requests_get_a_4xx_naming_the_field(service_url, endpoint, body, field):
    resp = httpx.post(f"{service_url}/{endpoint}", json=body, timeout=30)
    assert 400 <= resp.status_code < 500, resp.text
    assert field in resp.text
