"""Splits users can state (shopsight/features.py plan_cutoffs, FeatureParams): an explicit test cutoff, the BTYD
calibration/holdout protocol with a shorter train/valid label window inside the calibration period, the end of
observation and the day boundaries of a timezone; clear errors naming the key to change."""

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from shopsight.churn import build_churn_dataset
from shopsight.config import FeatureParams, Params
from shopsight.features import build_propensity_dataset, plan_cutoffs, split_horizons
from tests.conftest import make_events

DAY = pd.Timedelta(days=1)
WEEK = 7 * DAY
START = pd.Timestamp("2024-01-01", tz="UTC")  # week 1 starts here; week 40 starts at START + 39 weeks


def purchase_log_78_weeks(n_users: int = 300, seed: int = 0) -> pd.DataFrame:
    """A transaction log (purchases only, like CDNOW): customers join during the first 12 weeks and buy at their
    own Poisson rate until they drop out, over 78 weeks."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_users):
        t = START + pd.Timedelta(hours=float(rng.uniform(0, 12 * 7 * 24)))
        rate = rng.gamma(1.5, 1 / 20)  # purchases per day
        alive_until = t + pd.Timedelta(days=float(rng.exponential(300)))
        while t < START + 78 * WEEK and t < alive_until:
            rows.append((f"c{k:03d}", f"i{rng.integers(30)}", "purchase", str(t.tz_localize(None)), float(rng.integers(5, 50))))
            t += pd.Timedelta(hours=float(rng.exponential(24 / rate)) + 1)
    return make_events(rows)


def _labels(events: pd.DataFrame, user: str, cutoff: pd.Timestamp, horizon_days: int) -> int:
    ts = events.loc[(events["user_id"] == user) & (events["event_type"] == "purchase"), "timestamp"]
    return int(((ts >= cutoff) & (ts < cutoff + horizon_days * DAY)).any())


def _params(**features) -> Params:
    base = {"windows_days": [7, 28, 84], "cutoff_step_days": 7, "n_train_cutoffs": 4}
    return Params.model_validate({"features": base | features, "churn": {"horizon_days": features.get("horizon_days", 14)}})


def test_rolling_default_is_unchanged():
    fp = FeatureParams(horizon_days=14, n_train_cutoffs=3)
    plan = plan_cutoffs(pd.Timestamp("2026-04-01 10:00", tz="UTC"), fp)
    assert plan["test"] == [pd.Timestamp("2026-03-18", tz="UTC")]
    assert plan["valid"] == [pd.Timestamp("2026-03-04", tz="UTC")]
    assert plan["train"] == [pd.Timestamp(d, tz="UTC") for d in ("2026-02-04", "2026-02-11", "2026-02-18")]
    assert split_horizons(fp) == {"train": 14, "valid": 14, "test": 14}


def test_several_validation_cutoffs_pool_their_rows_and_push_training_back():
    fp = FeatureParams(horizon_days=14, n_train_cutoffs=2, n_valid_cutoffs=3, windows_days=[7, 28])
    plan = plan_cutoffs(pd.Timestamp("2026-04-01 10:00", tz="UTC"), fp)
    assert plan["test"] == [pd.Timestamp("2026-03-18", tz="UTC")]
    # the latest validation window ends at the test cutoff; the others step back by cutoff_step_days
    assert plan["valid"] == [pd.Timestamp(d, tz="UTC") for d in ("2026-02-18", "2026-02-25", "2026-03-04")]
    # no training label window reaches the earliest validation cutoff
    assert plan["train"] == [pd.Timestamp(d, tz="UTC") for d in ("2026-01-28", "2026-02-04")]
    assert max(plan["train"]) + 14 * DAY <= min(plan["valid"])
    events = purchase_log_78_weeks(60)
    fp = fp.model_copy(update={"data_end": (START + 30 * WEEK).to_pydatetime()})
    data = build_propensity_dataset(events, fp)
    valid = data[data["split"] == "valid"]
    assert valid["cutoff"].nunique() == 3 and len(valid) > valid["user_id"].nunique()
    for cutoff, rows in valid.groupby("cutoff"):
        user = rows["user_id"].iloc[0]
        assert rows["label"].iloc[0] == _labels(events, user, cutoff, 14)


def test_several_test_cutoffs_roll_the_origin_and_keep_validation_before_the_first():
    """features.n_test_cutoffs: a rolling-origin test pooled in the report; nothing of train or valid labels a day at
    or after the first test cutoff, and each test row is labelled by its own window."""
    fp = FeatureParams(horizon_days=14, n_train_cutoffs=2, n_test_cutoffs=3, windows_days=[7, 28])
    plan = plan_cutoffs(pd.Timestamp("2026-04-01 10:00", tz="UTC"), fp)
    # the last test window ends at the last whole day, the earlier ones step back by cutoff_step_days
    assert plan["test"] == [pd.Timestamp(d, tz="UTC") for d in ("2026-03-04", "2026-03-11", "2026-03-18")]
    assert plan["valid"] == [pd.Timestamp("2026-02-18", tz="UTC")]
    assert plan["train"] == [pd.Timestamp(d, tz="UTC") for d in ("2026-01-28", "2026-02-04")]
    # an explicit test_cutoff is the first test cutoff; the last window must fit in the data
    explicit = fp.model_copy(update={"test_cutoff": pd.Timestamp("2026-02-25").date()})
    assert plan_cutoffs(pd.Timestamp("2026-04-01 10:00", tz="UTC"), explicit)["test"] == [
        pd.Timestamp(d, tz="UTC") for d in ("2026-02-25", "2026-03-04", "2026-03-11")]
    with pytest.raises(ValueError, match=r"last test cutoff \(n_test_cutoffs=3\).* fewer features.n_test_cutoffs"):
        plan_cutoffs(pd.Timestamp("2026-04-01 10:00", tz="UTC"), explicit.model_copy(update={"test_cutoff": pd.Timestamp("2026-03-05").date()}))
    with pytest.raises(ValidationError, match="n_test_cutoffs=2 needs features.split=rolling"):
        FeatureParams(split="calibration_holdout", train_horizon_days=7, n_test_cutoffs=2)

    events = purchase_log_78_weeks(80)
    end = START + 30 * WEEK
    fp = fp.model_copy(update={"data_end": end.to_pydatetime()})
    data = build_propensity_dataset(events, fp)
    test = data[data["split"] == "test"]
    first_test = test["cutoff"].min()
    assert test["cutoff"].nunique() == 3 and (test.groupby("cutoff").size() > 10).all()
    inner = data[data["split"] != "test"]
    assert (inner["cutoff"] + inner["horizon_days"] * DAY <= first_test).all()
    for _, row in test.groupby("cutoff").head(15).iterrows():
        assert row["label"] == _labels(events, row["user_id"], row["cutoff"], 14)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.parquet"
        events.to_parquet(path)
        params = Params.model_validate({"features": fp.model_dump(), "churn": {"horizon_days": 14}})
        churn = build_churn_dataset(path, params)
    assert sorted(churn.loc[churn["split"] == "test", "cutoff"].unique()) == sorted(test["cutoff"].unique())


def test_explicit_test_cutoff_and_its_errors():
    fp = FeatureParams(horizon_days=14, test_cutoff="2026-03-01")
    plan = plan_cutoffs(pd.Timestamp("2026-04-01", tz="UTC"), fp)
    assert plan["test"] == [pd.Timestamp("2026-03-01", tz="UTC")] and plan["valid"] == [pd.Timestamp("2026-02-15", tz="UTC")]
    with pytest.raises(ValueError, match=r"features.test_cutoff=2026-03-25: its label window .* earlier features.test_cutoff"):
        plan_cutoffs(pd.Timestamp("2026-04-01 12:00", tz="UTC"), fp.model_copy(update={"test_cutoff": pd.Timestamp("2026-03-25").date()}))
    # no history before the test cutoff
    events = purchase_log_78_weeks(20)
    late = START - 30 * DAY
    with pytest.raises(ValueError, match=r"no train/valid/test cutoff .* features.test_cutoff later"):
        build_propensity_dataset(events, FeatureParams(test_cutoff=late.date(), data_end=START + 78 * WEEK))


def test_calibration_holdout_weeks_1_39_predict_40_78():
    """The BTYD protocol on a 78-week log: fit on weeks 1-39 (labels from 13-week windows inside them), predict
    weeks 40-78 (a 273-day window) from the week-40 cutoff."""
    events = purchase_log_78_weeks()
    test_cutoff = START + 39 * WEEK
    params = _params(split="calibration_holdout", test_cutoff=str(test_cutoff.date()), horizon_days=273, train_horizon_days=91,
                     data_end=str((START + 78 * WEEK).tz_localize(None)))
    data = build_propensity_dataset(events, params.features)
    cutoffs = {s: sorted(data.loc[data["split"] == s, "cutoff"].unique()) for s in ("train", "valid", "test")}
    assert cutoffs["test"] == [test_cutoff]
    assert cutoffs["valid"] == [test_cutoff - 91 * DAY]
    assert cutoffs["train"] == [test_cutoff - 182 * DAY - k * WEEK for k in (3, 2, 1, 0)]
    assert data.groupby("split")["horizon_days"].unique().map(list).to_dict() == {"test": [273], "train": [91], "valid": [91]}
    # every label window of train and valid lies inside the calibration period, before the next split's cutoff
    inner = data[data["split"] != "test"]
    assert (inner["cutoff"] + inner["horizon_days"] * DAY <= test_cutoff).all()
    assert (data["cutoff"] + data["horizon_days"] * DAY <= START + 78 * WEEK).all()
    # the labels are purchases in each row's own window
    sample = data.groupby("split").head(40)
    for _, row in sample.iterrows():
        assert row["label"] == _labels(events, row["user_id"], row["cutoff"], row["horizon_days"]), (row["split"], row["user_id"])
    assert data.groupby("split").size().min() > 50 and 0 < data["label"].mean() < 1
    # full-history features see the whole calibration period: T = first purchase before the cutoff
    test = data[data["split"] == "test"].set_index("user_id")
    first = events.groupby("user_id")["timestamp"].min()
    np.testing.assert_allclose(test["first_purchase_days_ago"], (test_cutoff - first[test.index]) / DAY)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.parquet"
        events.to_parquet(path)
        churn = build_churn_dataset(path, params.model_copy(update={"churn": params.churn.model_copy(update={"horizon_days": 100})}))
    assert churn.groupby("split")["horizon_days"].unique().map(list).to_dict() == {"test": [100], "train": [91], "valid": [91]}
    assert sorted(churn.loc[churn["split"] == "test", "cutoff"].unique()) == [test_cutoff]


def test_calibration_holdout_needs_train_horizon_and_room_for_its_splits():
    with pytest.raises(ValidationError, match="features.train_horizon_days is required"):
        FeatureParams(split="calibration_holdout")
    events = purchase_log_78_weeks(40)
    fp = FeatureParams(split="calibration_holdout", test_cutoff=(START + 20 * WEEK).date(), horizon_days=100,
                       train_horizon_days=70, data_end=START + 78 * WEEK)
    with pytest.raises(ValueError, match=r"no train cutoff .* shorten features.train_horizon_days"):
        build_propensity_dataset(events, fp)


def test_taobao_like_end_with_the_china_timezone():
    """The Taobao file's last event is 15:59:23 UTC = 23:59:23 in China; observation ends at midnight China time."""
    rows = [(f"u{k % 5}", "i1", "purchase" if k % 4 == 0 else "view", str(pd.Timestamp("2017-11-20 02:00") + k * pd.Timedelta(hours=5)))
            for k in range(int(13.5 * 24 / 5))]
    rows += [("u0", "i2", "purchase", "2017-12-03 15:00"), ("u1", "i2", "view", "2017-12-03 15:59:23")]
    events = make_events(rows)
    t_end = events["timestamp"].max()
    china = dict(timezone="Asia/Shanghai", horizon_days=1, cutoff_step_days=1, n_train_cutoffs=2, windows_days=[1, 3])
    whole = FeatureParams(**china, data_end="2017-12-04 00:00")  # naive: read in the timezone
    assert plan_cutoffs(t_end, whole)["test"] == [pd.Timestamp("2017-12-02 16:00", tz="UTC")]  # Dec 3, 00:00 China
    # without data_end the last event is the end of observation: its day is partly observed, so given up
    assert plan_cutoffs(t_end, FeatureParams(**china))["test"] == [pd.Timestamp("2017-12-01 16:00", tz="UTC")]
    # in UTC the same end gives up the 16 observed hours of Dec 3 rather than labelling with them
    utc = FeatureParams(**(china | {"timezone": "UTC"}), data_end="2017-12-03T16:00:00Z")
    assert plan_cutoffs(t_end, utc)["test"] == [pd.Timestamp("2017-12-02", tz="UTC")]
    data = build_propensity_dataset(events, whole)
    test = data[data["split"] == "test"].set_index("user_id")
    assert test["cutoff"].unique().tolist() == [pd.Timestamp("2017-12-02 16:00", tz="UTC")]
    assert test.loc["u0", "label"] == 1  # the 15:00 UTC purchase is 23:00 on Dec 3 in China: inside the window
    assert (data["cutoff"].dt.hour == 16).all()


def test_timezones_with_daylight_saving_time_are_refused():
    with pytest.raises(ValidationError, match=r"features.timezone='Europe/Berlin' changes its UTC offset .* Etc/GMT-1"):
        FeatureParams(timezone="Europe/Berlin")
    with pytest.raises(ValidationError, match="not an IANA timezone"):
        FeatureParams(timezone="China")
    assert FeatureParams(timezone="Etc/GMT-1").utc_offset_ns == 3600 * 10**9
