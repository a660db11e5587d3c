import numpy as np
import pandas as pd
import pytest

from shopsight.config import DemandParams
from shopsight.demand import DemandRequest, daily_units, mase, moving_average, seasonal_naive, split_origins, wape, window_inputs
from tests.conftest import make_events


def test_daily_units_per_item_and_category_with_zero_days():
    events = make_events([
        ("u1", "a", "purchase", "2026-01-01T10:00:00", 5.0, "c1"),
        ("u2", "a", "purchase", "2026-01-01T11:00:00", 5.0, "c1"),
        ("u1", "b", "view", "2026-01-02T10:00:00", 5.0, "c2"),
        ("u3", "b", "purchase", "2026-01-03T10:00:00", 5.0, "c2"),
        ("u3", "b", "view", "2026-01-04T00:00:00", 5.0, "c2"),  # the data runs to the end of the 3rd
    ])
    events.loc[1, "quantity"] = 3
    s = daily_units(events)
    assert list(s.days.strftime("%d")) == ["01", "02", "03"]
    got = {(sid, lvl): row.tolist() for sid, lvl, row in zip(s.ids, s.levels, s.units)}
    assert got[("a", "item")] == [4.0, 0.0, 0.0]  # quantities summed
    assert got[("b", "item")] == [0.0, 0.0, 1.0]  # views are not sales
    assert got[("c2", "category")] == [0.0, 0.0, 1.0]


def test_daily_units_leave_out_a_partly_observed_last_day():
    """Data ending at 16:00 UTC: the last day's 16 observed hours must not stand for a whole day of sales."""
    events = make_events([
        ("u1", "a", "purchase", "2026-01-01T10:00:00", 5.0, "c1"),
        ("u1", "a", "purchase", "2026-01-02T10:00:00", 5.0, "c1"),
        ("u2", "a", "purchase", "2026-01-03T15:00:00", 5.0, "c1"),
        ("u3", "b", "view", "2026-01-03T16:00:00", 5.0, "c2"),
    ])
    s = daily_units(events)
    assert list(s.days.strftime("%d")) == ["01", "02"]
    assert s.units[s.ids.index("a")].tolist() == [1.0, 1.0]


def test_test_window_ends_by_the_last_event_when_data_ends_mid_day():
    cfg = DemandParams(horizon_days=7, input_days=14)
    start = pd.Timestamp("2026-01-01T09:00:00")
    rows = [("u1", "a", "purchase", str(start + pd.Timedelta(days=d)), 5.0, "c1") for d in range(60)]
    rows.append(("u1", "a", "view", "2026-03-02T16:00:00", 5.0, "c1"))  # the data ends mid-day
    s = daily_units(make_events(rows))
    o = split_origins(len(s.days), cfg)["test"][0]
    test_end = s.days[o + cfg.horizon_days - 1] + pd.Timedelta(days=1)  # the test window's exclusive end
    assert test_end <= pd.Timestamp("2026-03-02T16:00:00")
    assert str(s.days[-1].date()) == "2026-03-01" and s.units[s.ids.index("a"), o : o + 7].tolist() == [1.0] * 7


def test_baselines_and_metrics_by_hand():
    hist = np.array([[1, 2, 3, 4, 5, 6, 7, 8.0]])
    assert seasonal_naive(hist, 5, 3).tolist() == [[6, 7, 8, 6, 7]]
    assert moving_average(hist, 2, 4).tolist() == [[6.5, 6.5]]
    actual = np.array([[2.0, 0.0], [2.0, 4.0]])
    forecast = np.array([[1.0, 1.0], [2.0, 2.0]])
    assert wape(actual, forecast) == pytest.approx(4 / 8)
    in_sample = np.array([[0.0, 2.0, 0.0, 2.0], [1.0, 1.0, 1.0, 1.0]])  # second series has scale 0: skipped
    assert mase(actual[:1], forecast[:1], in_sample[:1], 1) == pytest.approx(1.0 / 2.0)
    assert mase(actual, forecast, in_sample, 1) == pytest.approx(0.5)


def test_split_keeps_training_targets_before_validation_and_test():
    cfg = DemandParams(horizon_days=7, input_days=14)
    plan = split_origins(60, cfg)
    assert plan["test"] == [53] and plan["valid"] == [46]
    assert max(plan["train"]) + 7 <= 46 and min(plan["train"]) >= 14
    with pytest.raises(ValueError, match="too few"):
        split_origins(30, cfg)


def test_window_inputs_scale_and_calendar():
    hist = np.array([[0.0] * 13 + [14.0], [2.0] * 14])
    inputs, scale = window_inputs(hist, pd.DatetimeIndex(["2026-01-05", "2026-01-06"]), np.array([False, True]), 7)
    assert inputs["window"].shape == (2, 14, 8) and inputs["context"].shape == (2, 7 * 7 + 2)
    assert scale.tolist() == [2.0, 3.0]
    assert inputs["window"][0, -1, 0] == pytest.approx(7.0)
    assert inputs["window"][0, -1, 1 + 6] == 1.0  # the day before Monday 2026-01-05 is a Sunday
    assert inputs["context"][0, 0] == 1.0 and inputs["context"][1, 1] == 1.0  # first target day: Monday, Tuesday
    assert inputs["context"][:, -1].tolist() == [0.0, 1.0]
    assert inputs["baseline"][:, 0] == pytest.approx([1.0 / 2.0, 2.0 / 3.0])  # window mean / scale


def test_residual_forecaster_starts_at_the_moving_average():
    """Untrained, the residual model forecasts the input window's mean on every day; the plain one does not."""
    from models.forecast import build_forecaster

    rng = np.random.default_rng(0)
    hist = rng.poisson(rng.uniform(0.1, 20.0, size=(6, 1)), size=(6, 14)).astype(float)
    inputs, scale = window_inputs(hist, pd.date_range("2026-01-05", periods=6), np.array([False, True] * 3), 7)
    for residual in (True, False):
        model = build_forecaster(14, 8, 7 * 7 + 2, 7, "cnn", 4, 3, 8, 0.0, 1e-3, residual=residual)
        units = np.asarray(model.predict(inputs, verbose=0)) * scale[:, None]
        at_mean = np.allclose(units, hist.mean(axis=1, keepdims=True).repeat(7, axis=1), rtol=1e-5)
        assert at_mean == residual


def test_demand_request_rejects_negative_history():
    with pytest.raises(ValueError, match="history"):
        DemandRequest(series_id="c1", history=[1.0, -2.0])
