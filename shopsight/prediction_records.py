"""What each service endpoint writes to the prediction log (shopsight/prediction_log.py): one small record per
answer, with no personal data beyond the opaque user id (which the log pseudonymises).

* /predict_propensity: the model's input features and {"probability", "calibrated_probability", "recent_activity"} (in bentos/service.py);
* /explain_propensity: {"probability", "recent_activity", "reasons": top feature names}; its input is the same
  feature vector /predict_propensity logs, so it is not logged twice;
* /churn_risk: {"churn_probability", "recent_activity", "horizon_days"}, likewise without the feature vector;
* /recommend: input {"n_items", "n_known"} (history length and how many ids the model knew) and output
  {"items", "scores", "fallback"}: the recommended ids in rank order (monitoring/recommend_quality.py scores them
  against what the user did next);
* /similar_items: input {"item_id", "known"}, output {"items", "scores"};
* /forecast_demand: input {"series_id", "level", "history_days", "history_source"}, output {"start", "units"}.

Keys are distinct per endpoint or share one type, so an hourly file of mixed endpoints still parses as one
table (monitoring/weekly.py read_log).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shopsight.prediction_log import Prediction


def recommend_records(users: Sequence[Any], answers: Sequence[Any]) -> list[Prediction]:
    """/recommend: RecentItems requests and their RecommendOut answers."""
    return [
        Prediction(
            u.user_id,
            {"n_items": len(u.items), "n_known": len(u.items) - len(a.unknown_items)},
            {"items": [i.item_id for i in a.items], "scores": [round(float(i.score), 6) for i in a.items], "fallback": a.fallback},
        )
        for u, a in zip(users, answers)
    ]


def similar_records(item_ids: Sequence[str], answers: Sequence[Any]) -> list[Prediction]:
    """/similar_items: queried item ids and their SimilarOut answers (no user)."""
    return [
        Prediction(None, {"item_id": i, "known": a.known},
                   {"items": [s.item_id for s in a.similar], "scores": [round(float(s.score), 6) for s in a.similar]})
        for i, a in zip(item_ids, answers)
    ]


def explained_records(answers: Sequence[Any]) -> list[Prediction]:
    """/explain_propensity: ExplainedScoreOut answers (the top reasons by feature name only)."""
    return [
        Prediction(a.user_id, None, {"probability": a.probability, "recent_activity": a.recent_activity,
                                     "reasons": [r.feature for r in a.reasons]}, a.as_of)
        for a in answers
    ]


def churn_records(answers: Sequence[Any]) -> list[Prediction]:
    """/churn_risk: ChurnOut answers."""
    return [
        Prediction(a.user_id, None, {"churn_probability": a.churn_probability, "recent_activity": a.recent_activity,
                                     "horizon_days": a.horizon_days}, a.as_of)
        for a in answers
    ]


def demand_records(series: Sequence[Any], answers: Sequence[Any]) -> list[Prediction]:
    """/forecast_demand: DemandRequest series and their DemandForecastOut answers (no user)."""
    return [
        Prediction(
            None,
            {"series_id": s.series_id, "level": s.level, "history_days": len(s.history) if s.history is not None else 0,
             "history_source": a.history_source},
            {"start": a.dates[0].isoformat() if a.dates else None, "units": [round(float(u), 4) for u in a.units]},
        )
        for s, a in zip(series, answers)
    ]
