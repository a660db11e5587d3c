"""User features at a time cutoff, labels after it, and the time-based split: one implementation for
training, batch scoring and the service."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from shopsight.config import FeatureParams
from shopsight.feature_sql import EVENT_COUNTS, compute_user_features, connection, feature_columns

DAY = pd.Timedelta(days=1)
SPLITS = ("train", "valid", "test")
__all__ = ["EVENT_COUNTS", "build_user_features", "feature_columns", "plan_cutoffs", "split_horizons", "build_propensity_dataset", "model_input"]


def build_user_features(events: pd.DataFrame, cutoff: pd.Timestamp, params: FeatureParams) -> pd.DataFrame:
    """Features of every user with at least one event in [cutoff - lookback, cutoff), from those events only.

    Returns a frame indexed by user_id with `feature_columns(params.windows_days)` as float64 columns.
    """
    frame = compute_user_features(events, [cutoff], params.windows_days, history_days=params.history_days, utc_offset_ns=params.utc_offset_ns)
    return frame.set_index("user_id")[feature_columns(params.windows_days)]


def purchase_labels(events: pd.DataFrame, cutoff: pd.Timestamp, horizon_days: int) -> pd.Series:
    """1 for users who purchase in [cutoff, cutoff + horizon), indexed by user_id (only buyers listed)."""
    ts = events["timestamp"]
    mask = (ts >= cutoff) & (ts < cutoff + horizon_days * DAY) & (events["event_type"] == "purchase")
    buyers = pd.Index(events.loc[mask, "user_id"].unique()).astype("string")
    return pd.Series(1, index=buyers, name="label", dtype="int64")


def observation_end(t_end: pd.Timestamp, params: FeatureParams) -> pd.Timestamp:
    """The end of observation: `features.data_end` (a naive time is read in `features.timezone`) or else `t_end`
    (the last event's time), in UTC."""
    if params.data_end is None:
        return pd.Timestamp(t_end)
    end = pd.Timestamp(params.data_end)
    return (end.tz_localize(params.timezone) if end.tzinfo is None else end).tz_convert("UTC")


def local_midnight(day, params: FeatureParams) -> pd.Timestamp:
    """The UTC instant of midnight starting calendar day `day` (a date or "YYYY-MM-DD") in `features.timezone`."""
    return pd.Timestamp(pd.Timestamp(day).date()).tz_localize(params.timezone).tz_convert("UTC")


def last_whole_day_end(t_end: pd.Timestamp, params: FeatureParams) -> pd.Timestamp:
    """The midnight (in `features.timezone`) ending the last wholly observed day: the end of observation floored,
    so a partly observed last day never counts as observed (its unobserved hours would read as "no purchase")."""
    end = observation_end(t_end, params)
    offset = pd.Timedelta(params.utc_offset_ns, unit="ns")
    return (end + offset).floor("D") - offset


def split_horizons(params: FeatureParams, test_horizon_days: int | None = None) -> dict[str, int]:
    """Each split's label window in days: `test_horizon_days` (default features.horizon_days) for test; the same for
    train/valid with split=rolling, features.train_horizon_days with split=calibration_holdout."""
    test = params.horizon_days if test_horizon_days is None else test_horizon_days
    inner = test if params.split == "rolling" else params.train_horizon_days
    return {"train": inner, "valid": inner, "test": test}


def plan_cutoffs(t_end: pd.Timestamp, params: FeatureParams) -> dict[str, list[pd.Timestamp]]:
    """Cutoffs for train/valid/test such that no label window overlaps a later split's cutoff.

    `t_end` is the last observed instant (the last event's time; `features.data_end` replaces it). Cutoffs are
    midnights in `features.timezone`. test = `features.test_cutoff`, or else the last cutoff whose label window
    [test, test + horizon_days) ends by the last whole observed day; with `n_test_cutoffs` > 1 (rolling only) the test
    cutoffs step by cutoff_step_days, from test_cutoff onwards or back from the last that fits (a rolling-origin
    test, pooled in the report). split=rolling: valid = the first test cutoff - horizon_days and train cutoffs step
    back by cutoff_step_days from valid - horizon_days, so no label window of train or valid reaches a test cutoff.
    split=calibration_holdout (the BTYD protocol: the test cutoff ends the calibration period): the same with
    train_horizon_days for train and valid, whose label windows lie inside the calibration period.
    """
    h = params.horizon_days
    end = last_whole_day_end(t_end, params)
    step = params.cutoff_step_days * DAY
    if params.test_cutoff is not None:
        test = [local_midnight(params.test_cutoff, params) + k * step for k in range(params.n_test_cutoffs)]
        if test[-1] + h * DAY > end:
            which = "its label window" if len(test) == 1 else f"the label window of its last test cutoff (n_test_cutoffs={len(test)})"
            raise ValueError(
                f"features.test_cutoff={params.test_cutoff}: {which} [{test[-1]}, {test[-1] + h * DAY}) of horizon_days={h} "
                f"ends after the last whole observed day (observation ends {observation_end(t_end, params)}, whole days until "
                f"{end}); set an earlier features.test_cutoff, fewer features.n_test_cutoffs or a shorter horizon "
                "(features.horizon_days / churn.horizon_days)"
            )
    else:
        test = [end - h * DAY - k * step for k in range(params.n_test_cutoffs)][::-1]
    inner = split_horizons(params, h)["valid"]
    valid = [test[0] - inner * DAY - k * step for k in range(params.n_valid_cutoffs)][::-1]
    last_train = valid[0] - inner * DAY
    train = [last_train - k * step for k in range(params.n_train_cutoffs)][::-1]
    return {"train": train, "valid": valid, "test": test}


def splits_with_history(t_start: pd.Timestamp, t_end: pd.Timestamp, params: FeatureParams) -> dict[pd.Timestamp, str]:
    """The planned cutoffs with at least cutoff_step_days of events before them, with their split; a clear error
    naming the keys to change when the test or validation cutoff, or every training cutoff, has none."""
    plan = plan_cutoffs(t_end, params)
    min_history = params.cutoff_step_days * DAY
    split_of = {c: split for split, cs in plan.items() for c in cs if c - t_start >= min_history}
    missing = [split for split in SPLITS if split not in split_of.values()]
    if not missing:
        return split_of
    keys = "features.horizon_days, features.n_train_cutoffs"
    if params.split == "calibration_holdout":
        keys = "features.train_horizon_days, features.n_train_cutoffs"
    if params.test_cutoff is not None:
        keys += " or move features.test_cutoff later"
    cut = {split: [str(c) for c in plan[split]] for split in missing}
    raise ValueError(
        f"no {'/'.join(missing)} cutoff with at least cutoff_step_days={params.cutoff_step_days} days of events before it "
        f"(the events start {t_start}; planned {cut}); shorten {keys}, or use a longer event log"
    )


def event_time_span(events: pd.DataFrame | str | Path) -> tuple[pd.Timestamp, pd.Timestamp]:
    """First and last event time of a canonical frame or Parquet file."""
    if isinstance(events, (str, Path)):
        # fetchall: a half-read result would keep the shared thread-local connection busy
        ((lo, hi),) = connection().execute(f"SELECT min(timestamp), max(timestamp) FROM read_parquet('{Path(events).as_posix()}')").fetchall()
        return pd.Timestamp(lo).tz_convert("UTC"), pd.Timestamp(hi).tz_convert("UTC")
    return events["timestamp"].min(), events["timestamp"].max()


def build_propensity_dataset(events: pd.DataFrame | str | Path, params: FeatureParams) -> pd.DataFrame:
    """Rows = (user, cutoff) with features, `label` (bought within the split's horizon), `split` and `horizon_days`
    (the label window of the row's split), in one pass."""
    return check_propensity_splits(propensity_rows(events, propensity_cutoffs(events, params), params))


def propensity_rows(events: pd.DataFrame | str | Path, split_of: dict[pd.Timestamp, str], params: FeatureParams) -> pd.DataFrame:
    """The propensity rows of the users in `events` at the given cutoffs (cutoff -> split): one user-hash shard's
    part of the dataset when `events` is a shard (shopsight.shards), the whole dataset otherwise."""
    horizons = split_horizons(params)
    dataset = compute_user_features(
        events, list(split_of), params.windows_days, horizon_days={c: horizons[s] for c, s in split_of.items()},
        history_days=params.history_days, utc_offset_ns=params.utc_offset_ns,
    )
    dataset["split"] = dataset["cutoff"].map(split_of)
    dataset["horizon_days"] = dataset["split"].map(horizons).astype("int64")
    return dataset


def check_propensity_splits(dataset: pd.DataFrame) -> pd.DataFrame:
    """The dataset, or a clear error when a split has no rows."""
    missing = set(SPLITS) - set(dataset["split"])
    if missing:
        raise ValueError(
            f"no rows for split(s) {sorted(missing)}: no user has events in the look-back window before its cutoff; "
            "check features.test_cutoff / features.* in params.yaml against the data span"
        )
    return dataset


def propensity_cutoffs(events: pd.DataFrame | str | Path, params: FeatureParams) -> dict[pd.Timestamp, str]:
    """The propensity dataset's cutoffs with their split: the planned ones with at least a step of history."""
    t_start, t_end = event_time_span(events)
    return splits_with_history(t_start, t_end, params)


def model_input(features: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """The float32 matrix the propensity models take: log1p of the (non-negative) features, in `columns` order."""
    return model_input_values(features[columns].to_numpy(dtype="float64"))


MODEL_INPUT_DECIMALS = 6


def model_input_values(values: np.ndarray) -> np.ndarray:
    """`model_input` of a feature matrix already in the model's column order. The features are rounded to
    MODEL_INPUT_DECIMALS first: DuckDB's parallel sums add money in no fixed order, so a revenue can come out as
    1125.44 in one run and 1125.4399999999998 in the next, which moved LightGBM's early-stopped rounds from 26 to 6
    on Online Retail II; rounded, the same events give the same model input (and the same models) every run."""
    return np.log1p(np.clip(np.round(values, MODEL_INPUT_DECIMALS), 0.0, None)).astype("float32")
