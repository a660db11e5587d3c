"""Full-history user features (shopsight/lifetime.py): a pandas reference straight from the definitions, hand-computed
values on a small purchase log, and the batch (DuckDB) and request (numpy) paths against both."""

import numpy as np
import pandas as pd
import pytest

from shopsight.config import FeatureParams
from shopsight.feature_fast import compute_user_features_fast
from shopsight.feature_sql import compute_user_features, feature_columns
from shopsight.lifetime import LIFETIME_COLUMNS

DAY = pd.Timedelta(days=1)
T0 = pd.Timestamp("2026-01-01", tz="UTC")


def lifetime_reference(events: pd.DataFrame, cutoff: pd.Timestamp, history_days: int | None = None, utc_offset_ns: int = 0) -> dict:
    """LIFETIME_COLUMNS of ONE user's events at `cutoff`, from the definitions (plain pandas, no shared code)."""
    offset = pd.Timedelta(utc_offset_ns, unit="ns")
    ts = events["timestamp"]
    keep = ts < cutoff
    if history_days is not None:
        local_midnight = (cutoff + offset).floor("D") - offset
        keep &= ts >= local_midnight - history_days * DAY
    ev = events[keep].sort_values("timestamp", kind="stable")
    day = ((ev["timestamp"] + offset).dt.floor("D") - pd.Timestamp("1970-01-01", tz="UTC")) // DAY
    buy = ev["event_type"] == "purchase"
    buys = ev[buy]
    pdays = sorted(set(day[buy]))
    value = ev["price"].fillna(0) * ev["quantity"]
    returned = pd.Series(False, index=ev.index)
    for idx, row in ev[ev["event_type"] == "remove_from_cart"].iterrows():
        same_item = buys["item_id"].fillna("<null>") == ("<null>" if pd.isna(row["item_id"]) else row["item_id"])
        earlier = buys[same_item & (buys["timestamp"] < row["timestamp"])]
        returned[idx] = len(earlier) > 0
    units = float(buys["quantity"].sum())
    ret_units = float(ev.loc[returned, "quantity"].sum())
    monetary = max(float(value[buy].sum()) - float(value[returned].sum()), 0.0)
    gaps = np.diff(pdays)
    r = {
        "purchase_days_total": float(len(pdays)),
        "repeat_purchase_days": float(max(len(pdays) - 1, 0)),
        "first_purchase_days_ago": (cutoff - buys["timestamp"].min()) / DAY if len(buys) else 0.0,
        "purchase_span_days": float(pdays[-1] - pdays[0]) if pdays else 0.0,
        "tenure_days": (cutoff - ev["timestamp"].min()) / DAY if len(ev) else 0.0,
        "active_days_total": float(day.nunique()),
        "monetary_total": monetary,
        "monetary_per_purchase_day": monetary / max(len(pdays), 1),
        "returned_units_total": max(ret_units, 0.0),
        "return_rate": max(ret_units / units, 0.0) if units > 0 else 0.0,
        "ipt_mean_days": float(np.mean(gaps)) if len(gaps) >= 1 else 0.0,
        "ipt_std_days": float(np.std(gaps, ddof=1)) if len(gaps) >= 2 else 0.0,
    }
    assert list(r) == LIFETIME_COLUMNS
    return r


def random_purchase_log(seed: int, n: int = 1200, n_users: int = 20, days: int = 120) -> pd.DataFrame:
    """Clickstream plus a transaction log: repeat purchases of the same items, removals before and after the
    purchase (returns), null prices and quantities spread over `days` days."""
    rng = np.random.default_rng(seed)
    users = np.array([f"u{k:02d}" for k in range(n_users)])
    ts = T0 + pd.to_timedelta(rng.integers(0, days * 86_400_000_000, n), unit="us")
    item = rng.integers(0, 8, n)  # few items: the same user buys and removes the same item often
    frame = pd.DataFrame(
        {
            "user_id": pd.array(users[rng.integers(0, n_users, n)], dtype="string"),
            "item_id": pd.array([f"i{i}" for i in item], dtype="string"),
            "event_type": rng.choice(["view", "cart", "remove_from_cart", "remove_from_cart", "purchase", "purchase", "purchase"], n),
            "timestamp": ts,
            "session_id": pd.array([f"s{k}" for k in rng.integers(0, 200, n)], dtype="string"),
            "category": pd.array([f"c{i % 3}" for i in item], dtype="string"),
            "price": np.where(rng.random(n) < 0.05, np.nan, rng.gamma(2.0, 20.0, n).round(2)),
            "quantity": rng.integers(1, 6, n),
        }
    )
    return frame.sort_values("timestamp", ignore_index=True)


def _check_against_reference(got: pd.DataFrame, events: pd.DataFrame, history_days=None, utc_offset_ns=0) -> None:
    assert len(got) > 0
    for _, row in got.iterrows():
        want = lifetime_reference(events[events["user_id"] == row["user_id"]], row["cutoff"], history_days, utc_offset_ns)
        for col in LIFETIME_COLUMNS:
            assert np.isclose(row[col], want[col], rtol=1e-9, atol=1e-9), (row["user_id"], row["cutoff"], col, row[col], want[col])


def test_online_retail_like_customer_by_hand():
    """Bought on days 0, 3 and 10 (item A twice), cancelled 2 units of A on day 11; removed B before buying it."""
    from tests.conftest import make_events

    events = make_events([
        ("c", "B", "cart", "2026-01-01 08:00", 10.0),
        ("c", "B", "remove_from_cart", "2026-01-01 08:05", 10.0),  # before the purchase: not a return
        ("c", "A", "purchase", "2026-01-01 09:00", 2.0),
        ("c", "B", "purchase", "2026-01-04 09:00", 10.0),
        ("c", "A", "purchase", "2026-01-11 09:00", 2.0),
        ("c", "A", "remove_from_cart", "2026-01-12 09:00", 2.0),  # a cancellation: a return
        ("c", "X", "view", "2026-01-14 09:00", 1.0),
    ])
    events.loc[events["event_type"] == "remove_from_cart", "quantity"] = [1, 2]
    cutoff = pd.Timestamp("2026-01-15", tz="UTC")
    got = compute_user_features(events, [cutoff], [7]).set_index("user_id").loc["c"]
    want = {
        "purchase_days_total": 3, "repeat_purchase_days": 2, "first_purchase_days_ago": 14 - 9 / 24, "purchase_span_days": 10,
        "tenure_days": 14 - 8 / 24, "active_days_total": 5, "monetary_total": 2 + 10 + 2 - 4, "monetary_per_purchase_day": 10 / 3,
        "returned_units_total": 2, "return_rate": 2 / 3, "ipt_mean_days": 5, "ipt_std_days": float(np.std([3, 7], ddof=1)),
    }
    for col, value in want.items():
        assert got[col] == pytest.approx(value), col
    fast = compute_user_features_fast(events, {"c": cutoff}, [7]).set_index("user_id").loc["c"]
    assert fast[feature_columns([7])].to_dict() == pytest.approx(got[feature_columns([7])].to_dict())


@pytest.mark.parametrize("history_days, timezone", [(None, "UTC"), (30, "UTC"), (None, "Asia/Shanghai"), (21, "America/Bogota")])
def test_batch_and_request_paths_equal_the_definitions(history_days, timezone):
    events = random_purchase_log(1)
    offset = FeatureParams(timezone=timezone).utc_offset_ns
    # cutoffs at local midnights (as planned) and one mid-day, in two feature_sql batches (two times of day)
    midnights = [T0 + k * DAY - pd.Timedelta(offset, unit="ns") for k in (40, 75, 110)]
    cutoffs = [*midnights, T0 + 90 * DAY + pd.Timedelta(hours=13, microseconds=7)]
    got = compute_user_features(events, cutoffs, [7, 28], history_days=history_days, utc_offset_ns=offset)
    _check_against_reference(got, events, history_days, offset)
    assert np.isfinite(got[LIFETIME_COLUMNS].to_numpy()).all() and (got[LIFETIME_COLUMNS].to_numpy() >= 0).all()
    assert got["return_rate"].gt(0).any() and got["repeat_purchase_days"].gt(0).any() and got["ipt_std_days"].gt(0).any()
    for cutoff in cutoffs:
        batch = got[got["cutoff"] == cutoff]
        fast = compute_user_features_fast(events, {u: cutoff for u in batch["user_id"]}, [7, 28], history_days, offset)
        np.testing.assert_allclose(fast[feature_columns([7, 28])].to_numpy(), batch[feature_columns([7, 28])].to_numpy(), rtol=1e-9, atol=1e-9)


def test_history_bound_drops_old_events_and_the_returns_of_old_purchases():
    from tests.conftest import make_events

    events = make_events([
        ("c", "A", "purchase", "2026-01-01 09:00", 5.0),
        ("c", "A", "remove_from_cart", "2026-02-20 09:00", 5.0),
        ("c", "B", "purchase", "2026-02-25 09:00", 3.0),
    ])
    cutoff = pd.Timestamp("2026-03-01", tz="UTC")
    unbounded = compute_user_features(events, [cutoff], [28]).set_index("user_id").loc["c"]
    bounded = compute_user_features(events, [cutoff], [28], history_days=30).set_index("user_id").loc["c"]
    assert unbounded["purchase_days_total"] == 2 and unbounded["returned_units_total"] == 1 and unbounded["monetary_total"] == 3
    # A's purchase is 59 days back: outside a 30-day history, so its removal is no return either
    assert bounded["purchase_days_total"] == 1 and bounded["returned_units_total"] == 0 and bounded["monetary_total"] == 3
    assert bounded["tenure_days"] == pytest.approx(8 + 15 / 24)


def test_days_follow_the_timezone():
    """23:30 and 00:30 UTC are two UTC days but one day in China (UTC+8: 07:30 and 08:30)."""
    from tests.conftest import make_events

    events = make_events([("c", "A", "purchase", "2026-01-10 23:30", 1.0), ("c", "A", "purchase", "2026-01-11 00:30", 1.0)])
    cutoff = pd.Timestamp("2026-01-20", tz="UTC")
    utc = compute_user_features(events, [cutoff], [28]).iloc[0]
    china = compute_user_features(events, [cutoff], [28], utc_offset_ns=FeatureParams(timezone="Asia/Shanghai").utc_offset_ns).iloc[0]
    assert utc["purchase_days_total"] == 2 and china["purchase_days_total"] == 1
    assert utc["active_days_total"] == 2 and china["active_days_total"] == 1
