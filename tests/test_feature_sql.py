"""shopsight/feature_sql.py against a direct pandas reference: per cutoff, filter the events, count.

The fast path buckets days into segments, keeps bit masks per (user, key) and splits many cutoffs into
batches; the reference does none of that, so any slip in the bookkeeping shows up as a mismatch.
"""

import numpy as np
import pandas as pd
import pytest

from shopsight.feature_sql import (
    EVENT_COUNTS,
    MAX_SEGMENTS,
    _batches,
    compute_user_features,
    feature_columns,
)
from tests.test_lifetime import lifetime_reference

DAY = pd.Timedelta(days=1)
T0 = pd.Timestamp("2026-01-01", tz="UTC")


def _random_events(seed: int, n: int = 1500) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    users = np.array([f"u{k:02d}" for k in range(25)])
    ts = T0 + pd.to_timedelta(rng.integers(0, 80 * 86_400_000_000, n), unit="us")  # microseconds, as DuckDB
    item = rng.integers(0, 40, n)
    category = np.where(item % 7 == 0, None, np.array([f"c{i % 5}" for i in item], dtype=object)).astype(object)
    category[rng.random(n) < 0.05] = "c_other"  # some items appear under two categories
    session = np.array([f"s{k}" for k in rng.integers(0, 300, n)], dtype=object)  # sessions span days, users
    frame = pd.DataFrame(
        {
            "user_id": pd.array(users[rng.integers(0, len(users), n)], dtype="string"),
            "item_id": pd.array([f"i{i}" for i in item], dtype="string"),
            "event_type": rng.choice(["view", "view", "view", "cart", "remove_from_cart", "favorite", "purchase", "other"], n),
            "timestamp": ts,
            "session_id": session,
            "category": category,
            "price": np.where(rng.random(n) < 0.05, np.nan, rng.gamma(2.0, 20.0, n).round(2)),
            "quantity": rng.integers(1, 4, n),
        }
    )
    frame.loc[rng.random(n) < 0.03, "session_id"] = None
    frame.loc[rng.random(n) < 0.03, "item_id"] = pd.NA
    return frame.sort_values("timestamp", ignore_index=True)


def _reference(events: pd.DataFrame, cutoffs, windows: list[int], horizon: int) -> pd.DataFrame:
    """The features straight from their definitions, one cutoff at a time."""
    L = max(windows)
    rows = []
    for c in cutoffs:
        lo = c - L * DAY
        win = events[(events["timestamp"] >= lo) & (events["timestamp"] < c)]
        buyers = set(events.loc[(events["event_type"] == "purchase") & (events["timestamp"] >= c) & (events["timestamp"] < c + horizon * DAY), "user_id"])
        for user, ev in sorted(win.groupby("user_id"), key=lambda kv: kv[0]):
            r = {"cutoff": c, "user_id": user}
            for w in sorted(windows):
                sub = ev[ev["timestamp"] >= c - w * DAY]
                for e in EVENT_COUNTS:
                    r[f"{e}s_{w}d"] = float((sub["event_type"] == e).sum())
                r[f"active_days_{w}d"] = float(((sub["timestamp"] - lo) // DAY).nunique())
                buy = sub[sub["event_type"] == "purchase"]
                r[f"revenue_{w}d"] = float((buy["price"].fillna(0) * buy["quantity"]).sum())
                r[f"sessions_{w}d"] = float(sub["session_id"].nunique(dropna=False))
            r["recency_days"] = (c - ev["timestamp"].max()) / DAY
            buys = ev.loc[ev["event_type"] == "purchase", "timestamp"]
            r["purchase_recency_days"] = (c - buys.max()) / DAY if len(buys) else float(L + 1)
            r["first_seen_days"] = (c - ev["timestamp"].min()) / DAY
            views = ev.loc[ev["event_type"] == "view", "price"].dropna()
            r["mean_view_price"] = float(views.mean()) if len(views) else 0.0
            r["distinct_items"] = float(ev["item_id"].nunique(dropna=False))
            r["distinct_categories"] = float(ev["category"].nunique(dropna=True))
            r["cart_rate"] = r[f"carts_{L}d"] / (r[f"views_{L}d"] + 1)
            r["purchase_rate"] = r[f"purchases_{L}d"] / (r[f"views_{L}d"] + 1)
            r["events_per_session"] = len(ev) / max(r[f"sessions_{L}d"], 1)
            r.update(lifetime_reference(events[events["user_id"] == user], c))
            r["label"] = int(user in buyers)
            rows.append(r)
    return pd.DataFrame(rows)


def _assert_equal(got: pd.DataFrame, want: pd.DataFrame, windows: list[int]) -> None:
    key = ["cutoff", "user_id"]
    got = got.sort_values(key, ignore_index=True)
    want = want.sort_values(key, ignore_index=True)
    assert len(got) == len(want) > 0
    assert (got["user_id"].astype(str).to_numpy() == want["user_id"].astype(str).to_numpy()).all()
    assert (got["cutoff"].to_numpy() == want["cutoff"].to_numpy()).all()
    for col in [*feature_columns(windows), "label"]:
        np.testing.assert_allclose(got[col].to_numpy(float), want[col].to_numpy(float), rtol=1e-9, atol=1e-9, err_msg=col)


@pytest.mark.parametrize("seed", [0])
def test_matches_the_definitions_over_many_cutoffs_and_batches(seed):
    events = _random_events(seed)
    windows = [1, 5, 30]
    cutoffs = [T0 + (31 + k) * DAY for k in range(45)] + [T0 + 40 * DAY + pd.Timedelta(hours=12)]
    assert len(_batches(cutoffs[:-1], windows)) > 1, "the cutoffs must need several bit-mask batches"
    got = compute_user_features(events, cutoffs, windows, horizon_days=7)
    _assert_equal(got, _reference(events, cutoffs, windows, 7), windows)
    assert (got["return_rate"] > 0).any() and (got["repeat_purchase_days"] > 0).any(), "returns and repeat purchases are exercised"
    assert got["label"].dtype == np.int64 and got["user_id"].dtype == "string"
    assert str(got["cutoff"].dtype) == "datetime64[ns, UTC]"


def test_batches_respect_the_mask_width():
    cutoffs = [T0 + k * DAY for k in range(200)]
    batches = _batches(cutoffs, [1, 7, 28])
    assert [c for b in batches for c in b] == cutoffs
    for b in batches:
        edges = {(c - w * DAY).value for c in b for w in (0, 1, 7, 28)}
        assert len(edges) - 1 <= MAX_SEGMENTS


def test_parquet_and_frame_sources_agree(tmp_path):
    events = _random_events(3, n=800)
    path = tmp_path / "events.parquet"
    events.to_parquet(path, index=False)
    cutoffs = [T0 + 50 * DAY, T0 + 57 * DAY]
    from_file = compute_user_features(path, cutoffs, [7, 28], horizon_days=14)
    from_frame = compute_user_features(events, cutoffs, [7, 28], horizon_days=14)
    pd.testing.assert_frame_equal(from_file, from_frame)


def test_money_features_do_not_depend_on_the_order_rows_are_added_in():
    """Revenue, mean view price and monetary value are summed as whole millionths (exact integers): the same events in
    another row order give the same features bit for bit, where float sums of prices such as 0.1, 0.2, 0.7 differ in the
    last bits (what moved an early-stopped MLP between two `dvc repro` runs of the same events)."""
    events = _random_events(11, n=3000)
    events["price"] = np.where(events["price"].isna(), np.nan, np.resize([0.1, 0.2, 0.7, 1e-7, 3.3, 1125.44], len(events)))
    cutoffs = [T0 + 60 * DAY, T0 + 80 * DAY]
    money = ["revenue_7d", "revenue_28d", "mean_view_price", "monetary_total", "monetary_per_purchase_day"]
    runs = [compute_user_features(events.sample(frac=1.0, random_state=seed), cutoffs, [7, 28], horizon_days=7) for seed in range(4)]
    for other in runs[1:]:
        np.testing.assert_array_equal(other[money].to_numpy(), runs[0][money].to_numpy())
    sums = [sum(events.sample(frac=1.0, random_state=seed)["price"].dropna()) for seed in range(4)]
    assert len(set(sums)) > 1, "the float sums of these prices do depend on the order"
    assert runs[0]["monetary_total"].gt(0).any() and runs[0]["mean_view_price"].gt(0).any()
