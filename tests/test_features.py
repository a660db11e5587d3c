import numpy as np
import pandas as pd
import pytest

from shopsight.config import FeatureParams
from shopsight.features import build_user_features, feature_columns, plan_cutoffs, purchase_labels
from tests.conftest import make_events

PARAMS = FeatureParams(windows_days=[7, 28], horizon_days=7, cutoff_step_days=7, n_train_cutoffs=3)
CUTOFF = pd.Timestamp("2026-02-01", tz="UTC")


@pytest.fixture
def events():
    return make_events(
        [
            ("a", "i1", "view", "2026-01-31 10:00", 10.0, "c1"),
            ("a", "i1", "cart", "2026-01-31 10:02", 10.0, "c1"),
            ("a", "i1", "purchase", "2026-01-31 10:05", 10.0, "c1"),
            ("a", "i2", "view", "2026-01-10 09:00", 30.0, "c2"),
            ("b", "i3", "view", "2026-01-20 12:00", 5.0, "c1"),
            ("b", "i3", "view", "2026-01-20 12:10", 5.0, "c1"),
            ("c", "i1", "view", "2025-11-01 12:00", 5.0, "c1"),  # outside the 28-day look-back
            ("a", "i9", "purchase", "2026-02-03 12:00", 99.0, "c3"),  # after the cutoff: label only
        ]
    )


def test_counts_windows_recency_and_rates(events):
    f = build_user_features(events, CUTOFF, PARAMS)
    assert list(f.columns) == feature_columns([7, 28])
    assert set(f.index) == {"a", "b"}, "only users active in the look-back window"
    a, b = f.loc["a"], f.loc["b"]
    assert (a["views_7d"], a["views_28d"], a["purchases_7d"], a["carts_28d"]) == (1, 2, 1, 1)
    assert a["revenue_7d"] == pytest.approx(10.0)
    assert a["sessions_28d"] == 2 and b["sessions_28d"] == 1
    assert a["distinct_items"] == 2 and a["distinct_categories"] == 2
    assert a["recency_days"] == pytest.approx((CUTOFF - pd.Timestamp("2026-01-31 10:05", tz="UTC")) / pd.Timedelta(days=1))
    assert b["purchase_recency_days"] == 29, "no purchase -> look-back + 1"
    assert b["views_7d"] == 0 and b["views_28d"] == 2
    assert a["mean_view_price"] == pytest.approx(20.0)


def test_events_after_the_cutoff_never_change_features(events):
    before = build_user_features(events, CUTOFF, PARAMS)
    later = pd.concat([events, make_events([("b", "i7", "purchase", "2026-02-01 00:00:01")])], ignore_index=True)
    after = build_user_features(later, CUTOFF, PARAMS)
    pd.testing.assert_frame_equal(before, after)


def test_labels_come_from_the_horizon_only(events):
    labels = purchase_labels(events, CUTOFF, 7)
    assert labels.to_dict() == {"a": 1}
    assert purchase_labels(events, CUTOFF, 1).empty


def test_cutoff_plan_keeps_label_windows_apart():
    plan = plan_cutoffs(pd.Timestamp("2026-04-01", tz="UTC"), PARAMS)
    h = pd.Timedelta(days=PARAMS.horizon_days)
    assert plan["test"][0] + h <= pd.Timestamp("2026-04-01", tz="UTC")
    assert plan["valid"][0] + h <= plan["test"][0]
    assert max(plan["train"]) + h <= plan["valid"][0]
    assert len(plan["train"]) == 3 and plan["train"] == sorted(plan["train"])


@pytest.mark.parametrize("t_end", ["2026-04-01 16:00", "2026-03-31 23:59:59", "2026-04-01 00:00:01"])
def test_cutoff_plan_never_labels_past_data_that_ends_mid_day(t_end):
    """The test label window must end by the last observed instant, wherever in the day the data stops
    (a Taobao file ends at 16:00 UTC); the partly observed last day is given up."""
    t_end = pd.Timestamp(t_end, tz="UTC")
    plan = plan_cutoffs(t_end, PARAMS)
    h = pd.Timedelta(days=PARAMS.horizon_days)
    assert plan["test"][0] + h <= t_end
    assert plan["test"][0] + h > t_end - pd.Timedelta(days=1), "only the partial last day is given up"
    assert all(c == c.normalize() for cs in plan.values() for c in cs), "cutoffs are UTC midnights"


def test_propensity_labels_stay_inside_data_that_ends_mid_day():
    """Every (user, cutoff) label window of the dataset is observed: a purchase at 15:00 on the last day is
    seen; no window reaches the unobserved hours after the last event."""
    from shopsight.features import build_propensity_dataset

    start = pd.Timestamp("2026-01-01 09:00", tz="UTC")
    rows = [(f"u{d % 3}", "i1", "purchase" if d % 5 == 0 else "view", str(start + pd.Timedelta(days=d))) for d in range(90)]
    rows.append(("u0", "i1", "view", "2026-04-01 16:00"))  # the data ends mid-day
    events = make_events(rows)
    t_end = events["timestamp"].max()
    data = build_propensity_dataset(events, PARAMS)
    assert set(data["split"]) == {"train", "valid", "test"}
    assert (data["cutoff"] + pd.Timedelta(days=PARAMS.horizon_days) <= t_end).all()
    assert data.loc[data["split"] == "test", "cutoff"].unique().tolist() == [pd.Timestamp("2026-03-25", tz="UTC")]


def test_empty_window_gives_empty_frame_with_columns(events):
    f = build_user_features(events, pd.Timestamp("2020-01-01", tz="UTC"), PARAMS)
    assert f.empty and list(f.columns) == feature_columns([7, 28])
    values = build_user_features(events, CUTOFF, PARAMS).to_numpy()
    assert values.shape == (2, len(feature_columns([7, 28]))) and np.all(np.isfinite(values))
