"""User features at a time cutoff, labels after it, and the time-based split: one implementation for
training, batch scoring and the service."""

from __future__ import annotations

import numpy as np
import pandas as pd

from shopsight.config import FeatureParams

DAY = pd.Timedelta(days=1)
EVENT_COUNTS = ("view", "cart", "remove_from_cart", "favorite", "purchase")


def feature_columns(windows_days: list[int]) -> list[str]:
    """The ordered feature names for these windows (the model's input order)."""
    cols: list[str] = []
    for w in windows_days:
        cols += [f"{e}s_{w}d" for e in EVENT_COUNTS]
        cols += [f"sessions_{w}d", f"active_days_{w}d", f"revenue_{w}d"]
    cols += [
        "recency_days",
        "purchase_recency_days",
        "first_seen_days",
        "distinct_items",
        "distinct_categories",
        "mean_view_price",
        "cart_rate",
        "purchase_rate",
        "events_per_session",
    ]
    return cols


def _window_counts(codes: np.ndarray, age: np.ndarray, n_users: int, windows: list[int], mask: np.ndarray, weights=None):
    out = {}
    for w in windows:
        m = mask & (age < w)
        out[w] = np.bincount(codes[m], weights=None if weights is None else weights[m], minlength=n_users)
    return out


def build_user_features(events: pd.DataFrame, cutoff: pd.Timestamp, params: FeatureParams) -> pd.DataFrame:
    """Features of every user with at least one event in [cutoff - lookback, cutoff), from those events only.

    Returns a frame indexed by user_id with `feature_columns(params.windows_days)` as float64 columns.
    """
    windows = sorted(params.windows_days)
    lookback = params.lookback_days
    cutoff = pd.Timestamp(cutoff)
    cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
    ts = events["timestamp"]
    sel = events[(ts >= cutoff - lookback * DAY) & (ts < cutoff)]
    cols = feature_columns(windows)
    if sel.empty:
        return pd.DataFrame(columns=cols, index=pd.Index([], name="user_id", dtype="string"), dtype="float64")

    codes, users = pd.factorize(sel["user_id"], sort=True)
    n = len(users)
    age = ((cutoff - sel["timestamp"]) / DAY).to_numpy(dtype="float64")
    etype = sel["event_type"].astype("string").to_numpy(dtype=object)
    price = sel["price"].to_numpy(dtype="float64", na_value=np.nan)
    qty = sel["quantity"].to_numpy(dtype="float64", na_value=1.0)
    everything = np.ones(len(sel), dtype=bool)
    feats: dict[str, np.ndarray] = {}

    for e in EVENT_COUNTS:
        counts = _window_counts(codes, age, n, windows, etype == e)
        for w in windows:
            feats[f"{e}s_{w}d"] = counts[w]
    is_purchase = etype == "purchase"
    revenue = np.nan_to_num(price) * qty
    rev = _window_counts(codes, age, n, windows, is_purchase, weights=revenue)

    sess = pd.DataFrame({"u": codes, "s": sel["session_id"].to_numpy(dtype=object, na_value=""), "age": age})
    sess_age = sess.groupby(["u", "s"], sort=False)["age"].min()
    s_codes = sess_age.index.get_level_values("u").to_numpy()
    s_age = sess_age.to_numpy()
    days = pd.DataFrame({"u": codes, "d": np.floor(age)}).drop_duplicates()
    d_codes, d_age = days["u"].to_numpy(), days["d"].to_numpy()
    for w in windows:
        feats[f"sessions_{w}d"] = np.bincount(s_codes[s_age < w], minlength=n)
        feats[f"active_days_{w}d"] = np.bincount(d_codes[d_age < w], minlength=n)
        feats[f"revenue_{w}d"] = rev[w]

    min_age = np.full(n, np.inf)
    np.minimum.at(min_age, codes, age)
    max_age = np.zeros(n)
    np.maximum.at(max_age, codes, age)
    p_age = np.full(n, float(lookback + 1))
    np.minimum.at(p_age, codes[is_purchase], age[is_purchase])
    feats["recency_days"] = min_age
    feats["purchase_recency_days"] = p_age
    feats["first_seen_days"] = max_age

    feats["distinct_items"] = np.bincount(
        pd.DataFrame({"u": codes, "i": sel["item_id"].to_numpy(dtype=object)}).drop_duplicates()["u"].to_numpy(), minlength=n
    )
    cat = sel["category"].to_numpy(dtype=object, na_value=None)
    has_cat = pd.notna(cat)
    feats["distinct_categories"] = np.bincount(
        pd.DataFrame({"u": codes[has_cat], "c": cat[has_cat]}).drop_duplicates()["u"].to_numpy(), minlength=n
    )
    is_view_priced = (etype == "view") & ~np.isnan(price)
    view_price_sum = np.bincount(codes[is_view_priced], weights=price[is_view_priced], minlength=n)
    view_price_n = np.bincount(codes[is_view_priced], minlength=n)
    feats["mean_view_price"] = np.divide(view_price_sum, view_price_n, out=np.zeros(n), where=view_price_n > 0)
    L = windows[-1]
    views = feats[f"views_{L}d"].astype("float64")
    feats["cart_rate"] = feats[f"carts_{L}d"] / (views + 1.0)
    feats["purchase_rate"] = feats[f"purchases_{L}d"] / (views + 1.0)
    n_events = np.bincount(codes, minlength=n)
    feats["events_per_session"] = n_events / np.maximum(feats[f"sessions_{L}d"], 1)

    frame = pd.DataFrame({c: np.asarray(feats[c], dtype="float64") for c in cols}, index=pd.Index(users.astype("string"), name="user_id"))
    return frame


def purchase_labels(events: pd.DataFrame, cutoff: pd.Timestamp, horizon_days: int) -> pd.Series:
    """1 for users who purchase in [cutoff, cutoff + horizon), indexed by user_id (only buyers listed)."""
    ts = events["timestamp"]
    mask = (ts >= cutoff) & (ts < cutoff + horizon_days * DAY) & (events["event_type"] == "purchase")
    buyers = pd.Index(events.loc[mask, "user_id"].unique()).astype("string")
    return pd.Series(1, index=buyers, name="label", dtype="int64")


def plan_cutoffs(t_end: pd.Timestamp, params: FeatureParams) -> dict[str, list[pd.Timestamp]]:
    """Cutoffs for train/valid/test such that no label window overlaps a later split's cutoff.

    test = last day whose horizon is fully observed; valid = test - horizon; train cutoffs step back from
    valid - horizon. Label windows of earlier splits end before the next split's cutoff.
    """
    h = params.horizon_days
    test = pd.Timestamp(t_end).ceil("D") - h * DAY
    valid = test - h * DAY
    last_train = valid - h * DAY
    train = [last_train - k * params.cutoff_step_days * DAY for k in range(params.n_train_cutoffs)][::-1]
    return {"train": train, "valid": [valid], "test": [test]}


def build_propensity_dataset(events: pd.DataFrame, params: FeatureParams) -> pd.DataFrame:
    """Rows = (user, cutoff) with features, `label` (bought within the horizon) and `split`."""
    t_end = events["timestamp"].max()
    t_start = events["timestamp"].min()
    frames = []
    for split, cutoffs in plan_cutoffs(t_end, params).items():
        for cutoff in cutoffs:
            if cutoff - t_start < params.cutoff_step_days * DAY:
                continue  # not enough history before this cutoff
            feats = build_user_features(events, cutoff, params)
            labels = purchase_labels(events, cutoff, params.horizon_days)
            feats["label"] = labels.reindex(feats.index).fillna(0).astype("int64").to_numpy()
            feats["cutoff"] = cutoff
            feats["split"] = split
            frames.append(feats.reset_index())
    if not frames:
        raise ValueError(
            f"the events span {t_start} .. {t_end}: too short for horizon_days={params.horizon_days} and "
            f"n_train_cutoffs={params.n_train_cutoffs}; generate more days or shorten features.* in params.yaml"
        )
    dataset = pd.concat(frames, ignore_index=True)
    missing = {"train", "valid", "test"} - set(dataset["split"])
    if missing:
        raise ValueError(f"no rows for split(s) {sorted(missing)}: the data span is too short for features.* in params.yaml")
    return dataset


def model_input(features: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """The float32 matrix the propensity models take: log1p of the (non-negative) features, in `columns` order."""
    values = features[columns].to_numpy(dtype="float64")
    return np.log1p(np.clip(values, 0.0, None)).astype("float32")
