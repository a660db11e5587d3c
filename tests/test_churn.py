import numpy as np
import pandas as pd
import pytest

from shopsight.churn import active_users, activity_rfm, build_churn_dataset
from shopsight.config import Params
from tests.conftest import make_events


def _events():
    frame = []
    start = pd.Timestamp("2026-01-01", tz="UTC")
    for d in range(0, 70, 2):  # u_loyal: active every other day throughout
        frame.append(("u_loyal", "i1", "view", str(start + pd.Timedelta(days=d, hours=10))))
    for d in range(0, 50, 3):  # u_gone: last seen on day 48 (2026-02-18 12:00), inside every split's look-back
        frame.append(("u_gone", "i2", "purchase" if d % 6 == 0 else "view", str(start + pd.Timedelta(days=d, hours=12))))
    return make_events(frame)


def _churn_dataset(events: pd.DataFrame, params: Params) -> pd.DataFrame:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.parquet"
        events.to_parquet(path)
        return build_churn_dataset(path, params)


CHURN_PARAMS = {"features": {"windows_days": [7, 14], "horizon_days": 7, "cutoff_step_days": 7, "n_train_cutoffs": 1},
                "churn": {"horizon_days": 7}}


def test_churn_label_is_inactivity_in_the_horizon_for_users_active_before():
    events = _events()
    data = _churn_dataset(events, Params.model_validate(CHURN_PARAMS))
    assert set(data["split"]) == {"train", "valid", "test"}
    by = data.set_index(["split", "user_id"])["label"]
    assert by[("test", "u_loyal")] == 0
    # u_gone is in every split (active in each look-back window); its label is 1 once its last event is before the cutoff
    gone = data[data["user_id"] == "u_gone"]
    assert len(gone) == 3 and set(gone["label"]) == {0, 1}, "both labels of u_gone are exercised"
    last_seen = events.loc[events["user_id"] == "u_gone", "timestamp"].max()
    assert (gone["label"] == (gone["cutoff"] > last_seen).astype(int)).all()
    assert data[["bgnbd_frequency", "bgnbd_recency", "bgnbd_T"]].notna().all().all()


def test_churn_label_windows_end_by_the_last_event():
    """The data ends at 10:00 on its last day: no label window may run into the unobserved hours after it."""
    events = _events()
    data = _churn_dataset(events, Params.model_validate(CHURN_PARAMS))
    assert (data["cutoff"] + pd.Timedelta(days=7) <= events["timestamp"].max()).all()


def test_churn_label_one_for_a_user_silent_in_the_horizon_zero_for_one_who_returns():
    """Tiny events around one known test cutoff: the data ends 2026-03-10 16:00, so the test cutoff is 2026-03-03."""
    rows = [("u_filler", "i1", "view", str(pd.Timestamp("2026-01-01 08:00") + pd.Timedelta(days=d))) for d in range(69)]
    rows += [
        ("u_leaves", "i2", "view", "2026-02-25 09:00"), ("u_leaves", "i2", "purchase", "2026-03-01 09:00"),  # nothing after
        ("u_stays", "i3", "view", "2026-03-01 10:00"), ("u_stays", "i3", "view", "2026-03-09 23:00"),  # back in the horizon
        ("u_new", "i4", "view", "2026-03-05 10:00"),  # nothing in the look-back: no row at the test cutoff
        ("u_filler", "i1", "view", "2026-03-10 16:00"),
    ]
    data = _churn_dataset(make_events(rows), Params.model_validate(CHURN_PARAMS))
    test = data[data["split"] == "test"].set_index("user_id")
    assert test["cutoff"].unique().tolist() == [pd.Timestamp("2026-03-03", tz="UTC")]
    assert test.loc["u_leaves", "label"] == 1
    assert test.loc["u_stays", "label"] == 0
    assert test.loc["u_filler", "label"] == 0
    assert "u_new" not in test.index


def test_active_users_window_bounds():
    events = make_events([("u1", "i", "view", "2026-01-10T00:00:00"), ("u2", "i", "view", "2026-01-17T00:00:00")])
    got = active_users(events, [pd.Timestamp("2026-01-10", tz="UTC")], 7)
    assert got["user_id"].tolist() == ["u1"]  # [T, T + 7 days): the 17th is outside


def test_activity_rfm_counts_active_days_not_purchases():
    events = make_events([("u1", "i", "view", "2026-01-01T10:00:00"), ("u1", "i", "view", "2026-01-08T10:00:00"), ("u1", "i", "cart", "2026-01-08T11:00:00")])
    rfm = activity_rfm(events, pd.Timestamp("2026-01-15", tz="UTC"), 7.0)
    assert rfm.loc["u1", "bgnbd_frequency"] == 1.0 and rfm.loc["u1", "bgnbd_recency"] == pytest.approx(1.0)
    assert rfm.loc["u1", "bgnbd_T"] == pytest.approx(13 / 7)  # last observed day (14th) - first (1st)


