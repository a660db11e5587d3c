"""Each endpoint's prediction-log record: small, pseudonymised, and one hourly file of every endpoint still parses
as one table for the weekly report."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandas as pd
import pyarrow.json as pj

from shopsight.churn import ChurnOut
from shopsight.demand import DemandForecastOut, DemandRequest
from shopsight.explain import ExplainedScoreOut, FeatureContribution
from shopsight.prediction_log import (
    Prediction,
    PredictionLog,
    pseudonymise,
    read_prediction_log,
)
from shopsight.prediction_records import (
    churn_records,
    demand_records,
    explained_records,
    recommend_records,
    similar_records,
)
from shopsight.recommender import RecentItems, RecommendOut, ScoredItem, SimilarOut

T = datetime(2026, 3, 10, 10, tzinfo=UTC)


def _write_every_endpoint(directory, salt: str = "") -> None:
    log = PredictionLog(directory, salt=salt)
    log.append("predict_propensity", "propensity:1", [Prediction("alice", {"views_7d": 1.0}, {"probability": 0.4, "recent_activity": True}, T)], now=T)
    users = [RecentItems(user_id="alice", items=["i1", "nope", "i2"]), RecentItems(user_id="bob", items=[])]
    recs = [RecommendOut(user_id="alice", items=[ScoredItem(item_id="i9", score=0.7), ScoredItem(item_id="i3", score=0.2)],
                         unknown_items=["nope"], fallback=False, model="recommender:1"),
            RecommendOut(user_id="bob", items=[ScoredItem(item_id="i1", score=0.9)], unknown_items=[], fallback=True, model="recommender:1")]
    log.append("recommend", "recommender:1", recommend_records(users, recs), now=T)
    log.append("similar_items", "recommender:1", similar_records(["i1", "ghost"], [
        SimilarOut(item_id="i1", known=True, similar=[ScoredItem(item_id="i2", score=0.5)], model="recommender:1"),
        SimilarOut(item_id="ghost", known=False, similar=[], model="recommender:1")]), now=T)
    log.append("explain_propensity", "propensity:1", explained_records([ExplainedScoreOut(
        user_id="alice", probability=0.4, model="propensity:1", as_of=T, recent_activity=True,
        reasons=[FeatureContribution(feature="views_7d", contribution=0.3)])]), now=T)
    log.append("churn_risk", "churn:1", churn_records([ChurnOut(user_id="alice", churn_probability=0.2, horizon_days=7, model="churn:1",
                                                                as_of=T, recent_activity=True)]), now=T)
    log.append("forecast_demand", "demand:1", demand_records(
        [DemandRequest(series_id="c1", level="category", history=[1, 2, 3])],
        [DemandForecastOut(series_id="c1", level="category", dates=[date(2026, 3, 11), date(2026, 3, 12)], units=[2.0, 2.5],
                           model="demand:1", history_source="request")]), now=T)
    log.close()


def test_every_endpoint_writes_one_small_record_per_answer(tmp_path):
    _write_every_endpoint(tmp_path)
    frame = read_prediction_log(tmp_path)
    assert frame["endpoint"].value_counts().to_dict() == {
        "recommend": 2, "similar_items": 2, "predict_propensity": 1, "explain_propensity": 1, "churn_risk": 1, "forecast_demand": 1}
    rec = frame[frame["endpoint"] == "recommend"].set_index("user_id")
    assert rec.loc["alice", "features"] == {"n_items": 3, "n_known": 2}
    assert rec.loc["alice", "output"] == {"items": ["i9", "i3"], "scores": [0.7, 0.2], "fallback": False}
    assert rec.loc["bob", "output"]["fallback"] is True
    demand = frame[frame["endpoint"] == "forecast_demand"].iloc[0]
    assert pd.isna(demand["user_id"])  # a series, not a user
    assert demand["features"]["history_days"] == 3 and demand["output"] == {"start": "2026-03-11", "units": [2.0, 2.5]}
    explain = frame[frame["endpoint"] == "explain_propensity"].iloc[0]
    assert explain["output"]["reasons"] == ["views_7d"] and explain["features"] is None
    churn = frame[frame["endpoint"] == "churn_risk"].iloc[0]
    assert churn["output"]["churn_probability"] == 0.2 and churn["as_of"] == T


def test_a_file_of_every_endpoint_parses_as_one_table(tmp_path):
    """The weekly report's columnar reader (pyarrow JSON) falls back to the slow reader on a type clash."""
    _write_every_endpoint(tmp_path)
    (path,) = tmp_path.glob("predictions-*.jsonl")
    table = pj.read_json(path).flatten()
    assert table.num_rows == 8
    assert {"output.items", "output.probability", "features.views_7d", "features.n_known", "output.units"} <= set(table.column_names)


def test_user_ids_of_every_endpoint_are_pseudonymised(tmp_path):
    _write_every_endpoint(tmp_path, salt="pepper")
    frame = read_prediction_log(tmp_path)
    users = set(frame["user_id"].dropna())
    assert users == {pseudonymise("alice", "pepper"), pseudonymise("bob", "pepper")}
    assert "alice" not in (tmp_path / next(tmp_path.iterdir()).name).read_text()
