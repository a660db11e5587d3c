"""NDCG@k / HR@k of logged /recommend answers against each user's next item, on a hand-made log with a known answer."""

from __future__ import annotations

import json
import math
from datetime import datetime

import pandas as pd
import pytest

from monitoring.recommend_quality import matured_recommendations, next_items
from monitoring.weekly import build_weekly_report, read_log
from shopsight.config import DriftPolicyParams, FeatureParams
from shopsight.prediction_log import Prediction, PredictionLog, read_prediction_log
from shopsight.prediction_records import recommend_records
from shopsight.recommender import RecentItems, RecommendOut, ScoredItem
from tests.conftest import make_events

WEEK_END = pd.Timestamp("2026-03-23", tz="UTC")  # horizon 7: answers of [03-09, 03-16) have matured
TYPES = ("view", "cart", "favorite", "purchase")


def _at(ts: str) -> datetime:
    return pd.Timestamp(ts, tz="UTC").to_pydatetime()


def _answer(user: str, items: list[str]) -> tuple[RecentItems, RecommendOut]:
    out = RecommendOut(user_id=user, items=[ScoredItem(item_id=i, score=1.0 / (r + 1)) for r, i in enumerate(items)],
                       unknown_items=[], fallback=False, model="recommender:test")
    return RecentItems(user_id=user, items=["h1", "h2"]), out


def _write_log(directory) -> None:
    log = PredictionLog(directory)
    for user, items, when in [
        ("u1", ["a", "b", "c"], "2026-03-10T10:00"),  # next: b (rank 2)
        ("u2", ["a", "b"], "2026-03-11T10:00"),       # next: q, not recommended
        ("u3", ["c"], "2026-03-12T10:00"),            # next event after the 7-day horizon: not scored
        ("u5", ["d", "e", "f"], "2026-03-13T10:00"),  # next: d (rank 1)
        ("u4", ["a"], "2026-03-05T10:00"),            # before the matured week: ignored
    ]:
        request, out = _answer(user, items)
        log.append("recommend", out.model, recommend_records([request], [out]), now=_at(when))
    # another endpoint's record for u1 is not a recommendation
    log.append("predict_propensity", "propensity:test", [Prediction("u1", {"x": 1.0}, {"probability": 0.3}, _at("2026-03-10T10:00"))],
               now=_at("2026-03-10T10:00"))
    log.close()


EVENTS = make_events([
    ("u1", "z", "view", "2026-03-10T09:00"),              # before the answer
    ("u1", "x", "remove_from_cart", "2026-03-10T10:30"),  # not a next-item event type
    ("u1", "b", "view", "2026-03-10T11:00"),
    ("u1", "a", "view", "2026-03-10T12:00"),              # only the first next item counts
    ("u2", "q", "purchase", "2026-03-12T08:00"),
    ("u3", "c", "view", "2026-03-25T08:00"),
    ("u5", "d", "cart", "2026-03-13T11:00"),
    ("u4", "a", "view", "2026-03-05T11:00"),
])
NDCG = (1 / math.log2(3) + 0.0 + 1.0) / 3


@pytest.mark.parametrize("reader", ["records", "columnar"])
def test_ndcg_and_hit_rate_of_matured_answers_against_the_next_item(tmp_path, reader):
    _write_log(tmp_path)
    frame = (read_prediction_log(tmp_path) if reader == "records"
             else read_log(tmp_path, pd.Timestamp("2026-03-01", tz="UTC"), WEEK_END))
    scored, check, metrics = matured_recommendations(frame, EVENTS, WEEK_END, 7, 10, TYPES)
    assert scored["user_id"].tolist() == ["u1", "u2", "u5"]
    assert scored["target"].tolist() == ["b", "q", "d"]
    assert scored["rank"].tolist()[0] == 2 and math.isinf(scored["rank"].tolist()[1]) and scored["rank"].tolist()[2] == 1
    assert metrics["ndcg_at_10"] == pytest.approx(NDCG, abs=1e-6)
    assert metrics["hr_at_10"] == pytest.approx(2 / 3, abs=1e-6)
    assert metrics["answers"] == 4 and metrics["no_next_item"] == 1
    assert check.metric == "ndcg_at_10" and check.value == pytest.approx(NDCG, abs=1e-6)
    assert check.rows == 3 and check.positives == 2
    assert check.window == ("2026-03-09T00:00:00+00:00", "2026-03-16T00:00:00+00:00")


def test_k_cuts_the_list():
    log = read_prediction_log_from_records([("u1", ["a", "b", "c"], "2026-03-10T10:00")])
    _, check, metrics = matured_recommendations(log, EVENTS, WEEK_END, 7, 1, TYPES)
    assert metrics["hr_at_1"] == 0.0 and metrics["ndcg_at_1"] == 0.0 and check.rows == 1  # b is second


def read_prediction_log_from_records(rows):
    return pd.DataFrame({
        "timestamp": pd.to_datetime([r[2] for r in rows], utc=True),
        "endpoint": "recommend",
        "user_id": [r[0] for r in rows],
        "output": [{"items": r[1], "scores": [1.0] * len(r[1]), "fallback": False} for r in rows],
    })


def test_next_items_ignores_events_at_or_before_the_answer_and_after_the_horizon():
    preds = pd.DataFrame({"user_id": ["u1", "u1", "u3"], "t": pd.to_datetime(["2026-03-10T11:00", "2026-03-10T08:00", "2026-03-12T10:00"], utc=True)})
    got = next_items(preds, EVENTS, 7, TYPES)
    assert got.tolist()[0] == "a"  # the view of b at exactly 11:00 is not after the answer
    assert got.tolist()[1] == "z"
    assert pd.isna(got.tolist()[2])


def test_no_matured_answers_gives_no_value():
    log = read_prediction_log_from_records([("u1", ["a"], "2026-03-20T10:00")])  # horizon not over yet
    scored, check, metrics = matured_recommendations(log, EVENTS, WEEK_END, 7, 10, TYPES)
    assert scored.empty and check.value is None and check.rows == 0 and metrics is None


def test_weekly_report_shows_ndcg_next_to_roc_auc_in_json_html_and_snapshot(tmp_path):
    _write_log(tmp_path / "log")
    log = read_log(tmp_path / "log", pd.Timestamp("2026-03-01", tz="UTC"), WEEK_END)
    report = build_weekly_report(
        week_end=WEEK_END, reference=pd.DataFrame({"cutoff": [pd.Timestamp("2026-03-01", tz="UTC")]}), events=EVENTS,
        feature_params=FeatureParams(windows_days=[7, 28], horizon_days=7), policy=DriftPolicyParams(),
        out_root=tmp_path / "reports", prediction_log=log, sources=("quality", "recommend_quality"), next_item_types=TYPES,
    )
    saved = json.loads((tmp_path / "reports" / "2026-W12" / "weekly_report.json").read_text())
    assert saved["recommend_quality"]["value"] == pytest.approx(NDCG, abs=1e-6)
    assert saved["recommend_quality"]["metrics"]["hr_at_10"] == pytest.approx(2 / 3, abs=1e-6)
    assert "quality" in saved  # the propensity ROC-AUC check sits next to it (too few outcomes here to score)
    assert (tmp_path / "reports" / "2026-W12" / "recommend_quality.html").stat().st_size > 10_000
    values = {m["config"]["column"]: m["value"] for m in report.snapshots["recommend_quality"].dict()["metrics"]}
    assert values["ndcg_at_10"] == pytest.approx(NDCG, abs=1e-6) and values["hr_at_10"] == pytest.approx(2 / 3, abs=1e-6)
    assert not report.decision.retrain  # recommendation quality is reported, it does not decide a propensity retrain


def test_dashboard_has_one_quality_panel_with_roc_auc_ndcg_and_hit_rate(tmp_path):
    from monitoring.workspace import open_project

    _, project = open_project(tmp_path / "ws", ranking_k=10)
    panels = {p.title: p for p in project.dashboard.model().panels}
    quality = panels["Model quality over time (matured predictions)"]
    series = {(v.metric, tuple(sorted(v.metric_labels.items()))) for v in quality.values}
    assert ("evidently:metric_v2:RocAuc", ()) in series
    assert ("evidently:metric_v2:MeanValue", (("column", "ndcg_at_10"),)) in series
    assert ("evidently:metric_v2:MeanValue", (("column", "hr_at_10"),)) in series
