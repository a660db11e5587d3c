"""Quality over time of the served recommendations: NDCG@k and HR@k of the logged /recommend answers against
what each user did next.

A /recommend record (shopsight/prediction_records.py) holds the ranked item ids the service answered and when.
Once its outcome is known, its target is the user's next item: the first event of a type the recommender models
(params.yaml recommender.event_types: views, carts, favourites, purchases) strictly after the answer and within
`horizon_days`. Answers to users who did nothing in that time have no target and are not scored (their count is
reported); answers without a user id cannot be joined and are skipped. The metrics are those of offline
evaluation (shopsight.ranking.ranking_metrics: one relevant item, NDCG = 1 / log2(rank + 1)), so the weekly
numbers compare with the champion's test scores.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from monitoring.policy import QualityCheck
from shopsight.ranking import NEVER, ranking_metrics

RECOMMEND_ENDPOINT = "recommend"
DAY = pd.Timedelta(days=1)
QUALITY_TAG = "recommend_quality"


def _recommended_items(frame: pd.DataFrame) -> pd.Series:
    """The ranked item ids per record, from dict `output` records or the columnar reader's `output.items`."""
    if "output.items" in frame.columns:
        return frame["output.items"].map(lambda v: list(v) if v is not None else [])
    return frame["output"].map(lambda v: list(((json.loads(v) if isinstance(v, str) else v) or {}).get("items") or []))


def next_items(predictions: pd.DataFrame, events: pd.DataFrame, horizon_days: float, event_types: Sequence[str]) -> pd.Series:
    """For each prediction (columns user_id, t), the item of the user's first event of `event_types` strictly after t
    and before t + horizon_days; <NA> when there is none. Index: the predictions' index."""
    kept = events[events["event_type"].astype("string").isin(list(event_types))]
    right = pd.DataFrame({"user_id": kept["user_id"].astype("string").to_numpy(), "event_time": kept["timestamp"].to_numpy(),
                          "next_item": kept["item_id"].astype("string").to_numpy()}).sort_values("event_time", kind="stable")
    left = pd.DataFrame({"user_id": predictions["user_id"].astype("string").to_numpy(), "t": predictions["t"].to_numpy(),
                         "row": np.arange(len(predictions))}).sort_values("t", kind="stable")
    left["t"] = pd.to_datetime(left["t"], utc=True).astype("datetime64[ns, UTC]")
    right["event_time"] = pd.to_datetime(right["event_time"], utc=True).astype("datetime64[ns, UTC]")
    merged = pd.merge_asof(left, right, left_on="t", right_on="event_time", by="user_id", direction="forward",
                           allow_exact_matches=False, tolerance=pd.Timedelta(days=horizon_days))
    merged = merged.sort_values("row")
    return pd.Series(merged["next_item"].astype("string").to_numpy(), index=predictions.index)


def rank_in_list(items: list[str], target: Any) -> float:
    """1-based position of `target` in the ranked `items`; NEVER when it is absent."""
    if pd.isna(target):
        return NEVER
    try:
        return float(items.index(target) + 1)
    except ValueError:
        return NEVER


def matured_recommendations(
    log_frame: pd.DataFrame,
    events: pd.DataFrame,
    week_end: pd.Timestamp,
    horizon_days: int,
    k: int,
    event_types: Sequence[str],
    baseline: float | None = None,
) -> tuple[pd.DataFrame, QualityCheck, dict[str, float] | None]:
    """NDCG@k / HR@k of the /recommend answers logged in the week that ended `horizon_days` before week_end (so
    every answer had its full horizon to be followed by a next item).

    Returns the scored rows (user_id, t, target, rank, ndcg_at_k, hr_at_k), the QualityCheck (metric
    ndcg_at_k; rows = answers with a known next item; positives = hits in the top k) and all metrics
    ({"ndcg_at_k", "hr_at_k", "mrr_at_20", "answers", "no_next_item"}) or None when nothing was scored.
    """
    end = week_end - horizon_days * DAY
    start = end - 7 * DAY
    window = (start.isoformat(), end.isoformat())
    frame = log_frame
    if "endpoint" in frame.columns:
        frame = frame[(frame["endpoint"].astype("string") == RECOMMEND_ENDPOINT).fillna(False).to_numpy()]
    when = pd.to_datetime(frame["timestamp"], utc=True)
    frame = frame[((when >= start) & (when < end)).to_numpy() & frame["user_id"].notna().to_numpy()]
    columns = ["user_id", "t", "target", "rank", f"ndcg_at_{k}", f"hr_at_{k}"]
    if frame.empty:
        return pd.DataFrame(columns=columns), QualityCheck(f"ndcg_at_{k}", None, baseline, 0, 0, window), None
    preds = pd.DataFrame({"user_id": frame["user_id"].astype("string").to_numpy(),
                          "t": pd.to_datetime(frame["timestamp"], utc=True).to_numpy()})
    items = _recommended_items(frame).to_list()
    preds["target"] = next_items(preds, events, horizon_days, event_types).to_numpy()
    known = preds["target"].notna().to_numpy()
    scored = preds[known].reset_index(drop=True)
    scored_items = [i for i, keep in zip(items, known) if keep]
    if scored.empty:
        check = QualityCheck(f"ndcg_at_{k}", None, baseline, 0, 0, window)
        return pd.DataFrame(columns=columns), check, {"answers": len(preds), "no_next_item": len(preds)}
    ranks = np.array([rank_in_list(i, t) for i, t in zip(scored_items, scored["target"])], dtype=np.float64)
    scored["rank"] = ranks
    hit = ranks <= k
    scored[f"ndcg_at_{k}"] = np.where(hit, 1.0 / np.log2(np.where(hit, ranks, 1.0) + 1.0), 0.0)
    scored[f"hr_at_{k}"] = hit.astype("float64")
    metrics = ranking_metrics(ranks, k=k)
    metrics = {**{m: round(v, 6) for m, v in metrics.items()}, "answers": len(preds), "no_next_item": int((~known).sum())}
    check = QualityCheck(f"ndcg_at_{k}", metrics[f"ndcg_at_{k}"], baseline, len(scored), int(hit.sum()), window)
    return scored, check, metrics


def recommend_quality_snapshot(scored: pd.DataFrame, k: int, timestamp: datetime | None, tags: list[str]):
    """An Evidently snapshot whose MeanValue of the per-answer gains is the week's NDCG@k and HR@k (the dashboard
    plots these next to the propensity ROC-AUC)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import MeanValue

    cols = [f"ndcg_at_{k}", f"hr_at_{k}"]
    data = scored[cols].astype("float64").reset_index(drop=True)
    return Report([MeanValue(column=c) for c in cols], tags=[QUALITY_TAG, *tags], metadata={"source": QUALITY_TAG}).run(
        Dataset.from_pandas(data, data_definition=DataDefinition(numerical_columns=cols)), None, timestamp=timestamp
    )
