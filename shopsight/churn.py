"""Churn warning: will a user who was active in the look-back window have no activity in [T, T + horizon)?

One dataset (user x cutoff) with the shared user features (shopsight.features, the same code the service
runs), the label, and the BG/NBD inputs (frequency, recency, T over active days). Models: a class-weighted
Keras MLP on the aggregates, calibrated on the validation cutoff. Baselines: a recency rule (the churn rate
by days since last activity, learnt on the train split) and BG/NBD (shopsight.btyd) giving P(alive) and
P(no activity within the horizon). On the simulator the oracle is the generator's true P(no activity).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from shopsight import paths
from shopsight.config import ChurnParams, FeatureParams, Params
from shopsight.feature_sql import compute_user_features, connection
from shopsight.features import event_time_span, feature_columns, model_input, plan_cutoffs, split_horizons, splits_with_history

CHURN_FEATURES = paths.FEATURES_DIR / "churn.parquet"
CHURN_DIR = paths.ARTIFACTS_DIR / "churn"
CHURN_METRICS = paths.METRICS_DIR / "churn.json"
CHURN_PLOTS = paths.PLOTS_DIR / "churn"
RFM_COLUMNS = ["bgnbd_frequency", "bgnbd_recency", "bgnbd_T"]


def churn_cutoffs(t_end: pd.Timestamp, features: FeatureParams, churn: ChurnParams) -> dict[str, list[pd.Timestamp]]:
    """train/valid/test cutoffs planned like propensity's (shopsight.features.plan_cutoffs) with the churn horizon."""
    return plan_cutoffs(t_end, features.model_copy(update={"horizon_days": churn.horizon_days}))


def active_users(events: str | Path | pd.DataFrame, cutoffs: list[pd.Timestamp], horizon_days: int | dict) -> pd.DataFrame:
    """(cutoff, user_id) pairs with at least one event in [cutoff, cutoff + horizon) (`horizon_days`: one for all
    cutoffs or a mapping cutoff -> days)."""
    horizons = [int(horizon_days[c] if isinstance(horizon_days, dict) else horizon_days) for c in cutoffs]
    con = connection()
    if isinstance(events, (str, Path)):
        source = f"read_parquet('{Path(events).as_posix()}')"
    else:
        con.register("_churn_events", events)
        source = "_churn_events"
    try:
        frame = con.execute(
            f"""WITH cut AS (SELECT unnest($cutoffs::TIMESTAMPTZ[]) AS cutoff, unnest($horizons::INTEGER[]) AS h)
                SELECT DISTINCT c.cutoff, e.user_id FROM {source} e JOIN cut c
                  ON e.timestamp >= c.cutoff AND e.timestamp < c.cutoff + c.h * INTERVAL 1 DAY""",
            {"cutoffs": [pd.Timestamp(c).to_pydatetime() for c in cutoffs], "horizons": horizons},
        ).df()
    finally:
        if source == "_churn_events":
            con.unregister("_churn_events")
    frame["cutoff"] = pd.to_datetime(frame["cutoff"], utc=True).astype("datetime64[ns, UTC]")
    frame["user_id"] = frame["user_id"].astype("string")
    return frame


def activity_rfm(events: pd.DataFrame, cutoff: pd.Timestamp, time_unit_days: float) -> pd.DataFrame:
    """BG/NBD (frequency, recency, T) with active days as the transactions (churn here means inactivity)."""
    from shopsight.btyd import rfm_summary

    activity = events[["user_id", "timestamp"]].assign(event_type="purchase")
    rfm = rfm_summary(activity, cutoff, time_unit_days=time_unit_days)
    return rfm.rename(columns={"frequency": RFM_COLUMNS[0], "recency": RFM_COLUMNS[1], "T": RFM_COLUMNS[2]})


def activity_rfm_at_cutoffs(events_path: str | Path, cutoffs: list[pd.Timestamp], time_unit_days: float) -> pd.DataFrame:
    """`activity_rfm` at every cutoff (columns user_id, the RFM columns, cutoff), from the Parquet file without
    loading its events: DuckDB reduces them to (user, UTC day, first instant of that day) once, so memory follows
    users x active days, not events. The same values as activity_rfm on the loaded events (tests/test_scale_fixes.py)."""
    day_ns = 86_400 * 10**9
    unit = time_unit_days * pd.Timedelta(days=1)
    days = connection().execute(
        f"""SELECT user_id, epoch_ns(timestamp) // {day_ns} AS day, min(epoch_ns(timestamp)) AS first_ns
            FROM read_parquet('{Path(events_path).as_posix()}') GROUP BY user_id, day"""
    ).df()
    days["user_id"] = days["user_id"].astype("string")
    parts = []
    for cutoff in cutoffs:
        cutoff = pd.Timestamp(cutoff)
        cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
        seen = days.loc[days["first_ns"].to_numpy() < cutoff.value]
        per_user = seen.groupby("user_id", sort=True)["day"].agg(["min", "max", "count"])
        first = pd.to_datetime(per_user["min"].to_numpy() * day_ns, utc=True)
        last = pd.to_datetime(per_user["max"].to_numpy() * day_ns, utc=True)
        last_day = (cutoff - pd.Timedelta(1, "ns")).floor("D")
        parts.append(pd.DataFrame({
            "user_id": per_user.index.astype("string"),
            RFM_COLUMNS[0]: (per_user["count"].to_numpy() - 1).astype("float64"),
            RFM_COLUMNS[1]: ((last - first) / unit).to_numpy(dtype="float64"),
            RFM_COLUMNS[2]: ((last_day - first) / unit).to_numpy(dtype="float64"),
            "cutoff": cutoff,
        }))
    rfm = pd.concat(parts, ignore_index=True)
    rfm["cutoff"] = rfm["cutoff"].astype("datetime64[ns, UTC]")
    return rfm


def build_churn_dataset(events_path: str | Path, params: Params) -> pd.DataFrame:
    """Rows = (user active in the look-back window, cutoff) with features, BG/NBD inputs, `label` (1 = no activity
    in [cutoff, cutoff + horizon)), `split` and `horizon_days`: churn.horizon_days for test, and for train/valid
    too with features.split=rolling, features.train_horizon_days with calibration_holdout."""
    features, churn = params.features, params.churn
    t_start, t_end = event_time_span(events_path)
    churn_features = features.model_copy(update={"horizon_days": churn.horizon_days})
    try:
        split_of = splits_with_history(t_start, t_end, churn_features)
    except ValueError as exc:
        raise ValueError(f"churn (churn.horizon_days={churn.horizon_days} as the test horizon): {exc}") from exc
    horizons = split_horizons(features, churn.horizon_days)
    cutoffs = sorted(split_of)
    dataset = compute_user_features(
        events_path, cutoffs, features.windows_days, history_days=features.history_days, utc_offset_ns=features.utc_offset_ns
    )
    active = active_users(events_path, cutoffs, {c: horizons[split_of[c]] for c in cutoffs}).assign(_active=1)
    dataset = dataset.merge(active, on=["cutoff", "user_id"], how="left")
    dataset["label"] = (dataset.pop("_active").isna()).astype("int64")
    dataset["split"] = dataset["cutoff"].map(split_of)
    dataset["horizon_days"] = dataset["split"].map(horizons).astype("int64")

    rfm = activity_rfm_at_cutoffs(events_path, cutoffs, churn.bgnbd.time_unit_days)
    dataset = dataset.merge(rfm, on=["cutoff", "user_id"], how="left")
    missing = {"train", "valid", "test"} - set(dataset["split"])
    if missing:
        raise ValueError(
            f"no churn rows for split(s) {sorted(missing)}: no user has events in the look-back window before its cutoff; "
            "check churn.horizon_days and features.test_cutoff / features.* in params.yaml against the data span"
        )
    return dataset


def run_churn_features(params: Params, events_path: Path = paths.EVENTS, out: Path = CHURN_FEATURES) -> dict:
    """events.parquet -> data/features/churn.parquet; returns rows and churn rate per split."""
    dataset = build_churn_dataset(events_path, params)
    out.parent.mkdir(parents=True, exist_ok=True)
    dataset.to_parquet(out, index=False)
    summary = dataset.groupby("split")["label"].agg(["size", "mean"]).round(4)
    return {split: {"rows": int(r["size"]), "churn_rate": float(r["mean"])} for split, r in summary.iterrows()}


def train_churn(params: Params) -> dict:
    """Fit every churn candidate (params.yaml churn.candidates: rules, BG/NBD over active days, logistic regression,
    LightGBM, the MLP) on the train cutoffs, choose the champion on validation; shopsight.tasks.user_binary."""
    from shopsight.tasks import CHURN
    from shopsight.tasks.user_binary import train_user_task

    return train_user_task(CHURN, params)


def evaluate_churn(params: Params) -> dict:
    """Test metrics of every churn candidate and of the served champion, the target against the strongest
    reference, the oracle on the simulator; metrics/churn.json and plots/churn/."""
    from shopsight.tasks import CHURN
    from shopsight.tasks.user_binary import evaluate_user_task

    return evaluate_user_task(CHURN, params)


def register_churn(params: Params):
    """Register the churn champion (whatever its family) with its metrics, lineage and drift reference; the gate decides."""
    from shopsight.tasks import CHURN
    from shopsight.tasks.user_binary import register_user_task

    return register_user_task(CHURN, params)


# ---- serving: the same features (shopsight.serving.features_for_histories) and the stored model ----

from datetime import datetime  # noqa: E402

from pydantic import BaseModel, Field  # noqa: E402

from shopsight.serving import UserHistory  # noqa: E402


class ChurnRequest(UserHistory):
    """A user's recent events; `explain` adds the top contributing features to the answer."""

    explain: bool = False


class Contribution(BaseModel):
    feature: str
    contribution: float = Field(description="integrated gradient: how much the feature moved the (uncalibrated) score")


class ChurnOut(BaseModel):
    user_id: str
    churn_probability: float = Field(description="P(no activity in the next horizon_days), calibrated")
    horizon_days: int
    model: str
    as_of: datetime
    recent_activity: bool = Field(description="false when the user had no events in the look-back window (outside the training population)")
    reasons: list[Contribution] | None = None


def score_churn_requests(scorer, users: list[ChurnRequest], params: Params, horizon_days: int, tag: str, top_k: int) -> list[ChurnOut]:
    """Calibrated churn probabilities (and explanations where asked) for request histories."""
    from shopsight.serving import features_for_histories

    if not users:
        return []
    x, active, as_ofs = features_for_histories(users, params.features)
    probs = scorer.predict(x)
    wanted = [i for i, u in enumerate(users) if u.explain]
    reasons = dict(zip(wanted, scorer.explain(x[wanted], top_k))) if wanted else {}
    return [
        ChurnOut(user_id=u.user_id, churn_probability=float(p), horizon_days=horizon_days, model=tag, as_of=t, recent_activity=a,
                 reasons=[Contribution(**c) for c in reasons[i]] if i in reasons else None)
        for i, (u, p, a, t) in enumerate(zip(users, probs, active, as_ofs))
    ]

