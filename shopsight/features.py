"""User features at a time cutoff, labels after it, and the time-based split: one implementation for
training, batch scoring and the service."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from shopsight.config import FeatureParams
from shopsight.feature_sql import EVENT_COUNTS, compute_user_features, connection, feature_columns

DAY = pd.Timedelta(days=1)
__all__ = ["EVENT_COUNTS", "build_user_features", "feature_columns", "plan_cutoffs", "build_propensity_dataset", "model_input"]


def build_user_features(events: pd.DataFrame, cutoff: pd.Timestamp, params: FeatureParams) -> pd.DataFrame:
    """Features of every user with at least one event in [cutoff - lookback, cutoff), from those events only.

    Returns a frame indexed by user_id with `feature_columns(params.windows_days)` as float64 columns.
    """
    frame = compute_user_features(events, [cutoff], params.windows_days)
    return frame.set_index("user_id")[feature_columns(params.windows_days)]


def purchase_labels(events: pd.DataFrame, cutoff: pd.Timestamp, horizon_days: int) -> pd.Series:
    """1 for users who purchase in [cutoff, cutoff + horizon), indexed by user_id (only buyers listed)."""
    ts = events["timestamp"]
    mask = (ts >= cutoff) & (ts < cutoff + horizon_days * DAY) & (events["event_type"] == "purchase")
    buyers = pd.Index(events.loc[mask, "user_id"].unique()).astype("string")
    return pd.Series(1, index=buyers, name="label", dtype="int64")


def plan_cutoffs(t_end: pd.Timestamp, params: FeatureParams) -> dict[str, list[pd.Timestamp]]:
    """Cutoffs for train/valid/test such that no label window overlaps a later split's cutoff.

    `t_end` is the last observed instant (the last event's time). Cutoffs are UTC midnights; test = the last one
    whose label window [test, test + horizon) ends by `t_end`; valid = test - horizon; train cutoffs step back
    from valid - horizon. Label windows of earlier splits end before the next split's cutoff.
    """
    h = params.horizon_days
    # floor, not ceil: a partly observed last day would count its unobserved hours as "no purchase"
    test = pd.Timestamp(t_end).floor("D") - h * DAY
    valid = test - h * DAY
    last_train = valid - h * DAY
    train = [last_train - k * params.cutoff_step_days * DAY for k in range(params.n_train_cutoffs)][::-1]
    return {"train": train, "valid": [valid], "test": [test]}


def event_time_span(events: pd.DataFrame | str | Path) -> tuple[pd.Timestamp, pd.Timestamp]:
    """First and last event time of a canonical frame or Parquet file."""
    if isinstance(events, (str, Path)):
        # fetchall: a half-read result would keep the shared thread-local connection busy
        ((lo, hi),) = connection().execute(f"SELECT min(timestamp), max(timestamp) FROM read_parquet('{Path(events).as_posix()}')").fetchall()
        return pd.Timestamp(lo).tz_convert("UTC"), pd.Timestamp(hi).tz_convert("UTC")
    return events["timestamp"].min(), events["timestamp"].max()


def build_propensity_dataset(events: pd.DataFrame | str | Path, params: FeatureParams) -> pd.DataFrame:
    """Rows = (user, cutoff) with features, `label` (bought within the horizon) and `split`, in one pass."""
    split_of = propensity_cutoffs(events, params)
    dataset = compute_user_features(events, list(split_of), params.windows_days, horizon_days=params.horizon_days)
    dataset["split"] = dataset["cutoff"].map(split_of)
    missing = {"train", "valid", "test"} - set(dataset["split"])
    if missing:
        raise ValueError(f"no rows for split(s) {sorted(missing)}: the data span is too short for features.* in params.yaml")
    return dataset


def propensity_cutoffs(events: pd.DataFrame | str | Path, params: FeatureParams) -> dict[pd.Timestamp, str]:
    """The propensity dataset's cutoffs with their split: the planned ones with at least a step of history."""
    t_start, t_end = event_time_span(events)
    min_history = params.cutoff_step_days * DAY
    split_of = {c: split for split, cs in plan_cutoffs(t_end, params).items() for c in cs if c - t_start >= min_history}
    if not split_of:
        raise ValueError(
            f"the events span {t_start} .. {t_end}: too short for horizon_days={params.horizon_days} and "
            f"n_train_cutoffs={params.n_train_cutoffs}; generate more days or shorten features.* in params.yaml"
        )
    return split_of


def model_input(features: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """The float32 matrix the propensity models take: log1p of the (non-negative) features, in `columns` order."""
    return model_input_values(features[columns].to_numpy(dtype="float64"))


def model_input_values(values: np.ndarray) -> np.ndarray:
    """`model_input` of a feature matrix already in the model's column order."""
    return np.log1p(np.clip(values, 0.0, None)).astype("float32")
