"""Demand candidates behind one interface: returns netted, each family forecasts, the per-series choice picks
per series before validation, the champion is chosen on validation, reported by the metrics contract and served."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from shopsight import demand
from shopsight.candidates import get_model, load_candidate, save_candidate
from shopsight.config import DemandParams, load_params
from shopsight.demand import DemandRequest, DemandScorer, DemandSeries, candidate_config, daily_units, seasonal_naive, window_at
from tests.conftest import make_events


def _events(rows: list[tuple], quantities: list[int]) -> pd.DataFrame:
    frame = make_events(rows)
    frame["quantity"] = quantities
    return frame


def test_returns_are_removals_of_items_the_same_user_bought_netted_and_floored():
    rows = [
        ("u1", "a", "purchase", "2026-01-01T10:00:00"),
        ("u1", "a", "remove_from_cart", "2026-01-02T10:00:00"),  # a return: u1 bought a earlier
        ("u2", "a", "remove_from_cart", "2026-01-02T11:00:00"),  # not a return: u2 never bought a
        ("u3", "b", "remove_from_cart", "2026-01-01T09:00:00"),  # a cart change before u3's purchase: not a return
        ("u3", "b", "purchase", "2026-01-01T12:00:00"),
        ("u4", "c", "purchase", "2026-01-01T12:00:00"),
        ("u4", "c", "purchase", "2026-01-02T12:00:00"),
        ("u4", "c", "remove_from_cart", "2026-01-02T13:00:00"),  # returns 9 but bought 3 in all: capped at 3
        ("u5", "z", "view", "2026-01-03T00:00:00"),
    ]
    s = daily_units(_events(rows, [5, 2, 4, 1, 3, 1, 2, 9, 1]))
    got = {sid: row.tolist() for sid, row in zip(s.ids, s.units)}
    assert got["a"] == [5.0, 0.0]  # day 2: 0 bought - 2 returned, floored at 0
    assert got["b"] == [3.0, 0.0]
    assert got["c"] == [1.0, 0.0]  # day 2: 2 bought - 3 (capped) returned -> 0
    assert got["c1"] == [9.0, 0.0]  # the category sums its items' net units


def _series(n_days: int = 84) -> DemandSeries:
    days = pd.date_range("2026-01-05", periods=n_days, freq="D")  # a Monday
    weekly = np.where(days.dayofweek == 0, 7.0, 0.0)  # sells 7 on Mondays only: seasonal naive is exact
    steady = np.full(n_days, 2.0)  # every day 2: moving median and average are exact
    rng = np.random.default_rng(0)
    noisy = rng.poisson(3.0, n_days).astype(float)
    units = np.stack([weekly, steady, noisy, weekly + steady + noisy])
    return DemandSeries(["weekly", "steady", "noisy", "c1"], ["item", "item", "item", "category"], days, units)


def _config(**update) -> dict:
    cfg = DemandParams(horizon_days=7, input_days=14, **update)
    return candidate_config(cfg)


@pytest.mark.parametrize("name", ["seasonal_naive", "moving_average", "moving_median", "sf_seasonal_naive", "croston", "adida", "imapa", "auto_ets"])
def test_every_rule_and_statsforecast_candidate_forecasts_nonnegative_units_and_round_trips(name, tmp_path):
    s = _series()
    window = window_at(s, 70, 7)
    candidate = get_model("demand", name, _config())
    candidate.fit(s.until(70), window)
    f = candidate.predict(window)
    assert f.shape == (4, 7) and (f >= 0).all() and np.isfinite(f).all()
    save_candidate(candidate, tmp_path)
    assert np.allclose(load_candidate(tmp_path).predict(window), f)


def test_statsforecast_seasonal_naive_is_the_library_one_and_zero_history_forecasts_zero():
    s = _series()
    window = window_at(s, 70, 7)
    got = get_model("demand", "sf_seasonal_naive", _config()).predict(window)
    assert np.allclose(got, seasonal_naive(window.history, 7, 7))
    window.history[:] = 0.0
    assert (get_model("demand", "croston", _config()).predict(window) == 0).all()


def test_per_series_choice_picks_the_method_that_fits_each_series_before_validation(tmp_path):
    s = _series()
    cfg = _config(per_series_choice={"members": ["moving_median", "seasonal_naive", "moving_average"], "select_windows": 3,
                                     "weekday_profile": False})
    candidate = get_model("demand", "best_per_series", cfg)
    v = 70
    candidate.fit(s.until(v), window_at(s, v, 7))
    assert candidate.choice["item"]["weekly"] == "seasonal_naive"
    assert candidate.choice["item"]["steady"] == "moving_median"  # exact, as is the average: the first listed wins the tie
    window = window_at(s, v, 7)
    f = candidate.predict(window)
    assert np.allclose(f[0], window.actual[0]) and np.allclose(f[1], window.actual[1])
    save_candidate(candidate, tmp_path)
    assert np.allclose(load_candidate(tmp_path).predict(window), f)
    new = demand.DemandWindow(["never-seen"], ["item"], window.history[:1], window.start[:1], 7)
    assert load_candidate(tmp_path).predict(new).shape == (1, 7)  # an unseen series gets its level's most chosen member


def test_per_series_choice_refuses_members_that_need_fitting():
    s = _series()
    candidate = get_model("demand", "best_per_series", _config(per_series_choice={"members": ["moving_median", "cnn"]}))
    with pytest.raises(ValueError, match="per_series_choice.members: cnn"):
        candidate.fit(s.until(70), window_at(s, 70, 7))


def test_weekday_profile_closes_a_closed_day():
    days = pd.date_range("2026-01-05", periods=28, freq="D")
    units = np.where(days.dayofweek == 5, 0.0, 6.0)[None, :]  # closed on Saturdays
    profile = demand.weekday_profile(units, days, 4)
    assert profile[5] == 0 and profile.mean() == pytest.approx(1.0)
    shaped = demand.apply_weekday_profile(np.full((1, 7), 6.0), pd.DatetimeIndex(["2026-02-02"]), profile)
    assert shaped[0, 5] == 0 and shaped.sum() == pytest.approx(42.0)


def _shop_events(n_days: int = 70) -> pd.DataFrame:
    """Three items over `n_days`: a Monday seller, a steady seller, a sparse one; a return now and then."""
    rng = np.random.default_rng(1)
    rows, qty = [], []
    start = pd.Timestamp("2026-01-05T09:00:00")
    for d in range(n_days):
        day = start + pd.Timedelta(days=d)
        if day.dayofweek == 0:
            rows.append(("u1", "weekly", "purchase", str(day), 5.0, "c1")); qty.append(6)
        rows.append((f"s{d}", "steady", "purchase", str(day), 5.0, "c2")); qty.append(int(rng.poisson(4)) + 1)
        if rng.random() < 0.2:
            rows.append((f"r{d}", "sparse", "purchase", str(day), 5.0, "c2")); qty.append(2)
            if rng.random() < 0.5:
                rows.append((f"r{d}", "sparse", "remove_from_cart", str(day + pd.Timedelta(hours=2)), 5.0, "c2")); qty.append(1)
    rows.append(("u9", "steady", "view", str(start + pd.Timedelta(days=n_days)), 5.0, "c2")); qty.append(1)
    return _events(rows, qty)


@pytest.fixture()
def demand_params(tmp_path, monkeypatch):
    monkeypatch.setattr(demand, "DEMAND_METRICS", tmp_path / "metrics" / "demand.json")
    monkeypatch.setattr(demand, "DEMAND_PLOTS", tmp_path / "plots" / "demand")
    params = load_params()
    params.demand = DemandParams(
        horizon_days=7, input_days=14, window_step_days=1, moving_average_days=14, moving_median_days=14, serving_history_days=28,
        candidates=["seasonal_naive", "moving_average", "croston", "best_per_series", "cnn"],
        references=["seasonal_naive", "moving_average", "croston"],
        per_series_choice={"members": ["moving_median", "seasonal_naive", "croston"], "select_windows": 2},
        model={"epochs": 2, "filters": 4, "hidden_units": 8, "batch_size": 32},
    )
    return params


def test_train_selects_on_validation_evaluate_reports_the_contract_and_the_champion_is_served(tmp_path, demand_params):
    events = tmp_path / "events.parquet"
    _shop_events().to_parquet(events)
    out = tmp_path / "artifacts" / "demand"
    selection = demand.train_demand(demand_params, events, out)
    names = demand_params.demand.candidates
    valid = selection["valid"]
    assert set(valid) == set(names)
    best = min(valid[n]["wape"] for n in names)
    best_name = next(n for n in names if valid[n]["wape"] <= best + 1e-12)  # ties: first listed
    rule = selection["rule"]
    assert rule["rule"] == "beat_reference" and rule["best_on_valid"] == best_name
    if best_name in demand_params.demand.references:
        assert selection["champion"] == best_name
    else:  # a non-reference must beat the best reference beyond the noise
        beaten = rule["lead_over_reference"] > rule["k_se"] * rule["se_of_lead"]
        assert selection["champion"] == (best_name if beaten else rule["best_reference_on_valid"])
    assert selection["fit"]["cnn"]["epochs"] == 2 and selection["fit"]["cnn"]["epoch_s"] >= 0

    metrics = demand.evaluate_demand(demand_params, events, out)
    text = demand.DEMAND_METRICS.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["champion"] == selection["champion"]
    assert {"main_metric", "lower_is_better", "champion", "champion_family", "selected_on", "model_key", "valid", "test", "targets"} <= set(metrics)
    assert metrics["selected_on"] == "valid" and metrics["main_metric"] == "wape" and metrics["lower_is_better"] is True
    assert set(metrics["test"]) == set(names) and metrics["valid"] == valid
    assert metrics["targets"]["champion"] == selection["champion"]
    refs = [r for r in metrics["references"] if r != metrics["champion"]]
    best_ref = min(metrics["test"][r]["wape"] for r in refs)
    assert metrics["targets"]["best_reference_value"] == pytest.approx(best_ref)
    assert metrics["targets"]["met"] == (metrics["test"][metrics["champion"]]["wape"] < best_ref)
    assert all(v is None or (math.isfinite(v) and v >= 0) for row in metrics["test"].values() for v in row.values())
    assert (demand.DEMAND_PLOTS / "forecast.png").stat().st_size > 1000 and (demand.DEMAND_PLOTS / "history.csv").exists()

    scorer = DemandScorer(out)
    assert scorer.family == metrics["champion_family"]
    answers = scorer.forecast([DemandRequest(series_id="x", level="item", history=[0, 1, 0, 2, 1, 0, 3], start="2026-03-02"),
                               DemandRequest(series_id="steady", level="item"), DemandRequest(series_id="never", level="item")], "demand:t")
    assert [a.history_source for a in answers] == ["request", "stored", "none"]
    assert all(len(a.units) == 7 and min(a.units) >= 0 for a in answers) and answers[0].dates[0].isoformat() == "2026-03-02"
    # served = evaluated: the stored history gives the champion's own forecast of the series from the last day
    series = daily_units(events)
    i = series.ids.index("steady")
    expected = load_candidate(out).predict(window_at(series, len(series.days), 7, with_actual=False).rows([i]))
    assert np.allclose(answers[1].units, expected[0], atol=1e-3)


def test_a_champion_that_is_not_a_reference_must_beat_the_best_reference_beyond_the_noise():
    rng = np.random.default_rng(0)
    n, h = 300, 7
    actual = rng.poisson(rng.gamma(1.0, 2.0, (n, 1)), (n, h)).astype(float)
    level = np.repeat(actual.mean(axis=1, keepdims=True), h, axis=1)
    window = demand.DemandWindow([f"i{k}" for k in range(n)], ["item"] * n, np.zeros((n, 28)),
                                 pd.DatetimeIndex(["2026-03-02"] * n), h, actual)
    forecasts = {"seasonal_naive": np.roll(actual, 1, axis=0),                          # a weak reference
                 "croston": level + rng.normal(0, 0.3, (n, h)).clip(-level, None),    # the best reference
                 "moving_median": level + rng.normal(0, 0.29, (n, h)).clip(-level, None),  # level with it
                 "cnn": 0.5 * level + 0.5 * actual}                                   # far better
    metrics = {k: {"wape": demand.wape(actual, f)} for k, f in forecasts.items()}
    assert metrics["moving_median"]["wape"] < metrics["croston"]["wape"] < metrics["seasonal_naive"]["wape"]

    def choose(candidates, **selection):
        cfg = DemandParams(candidates=candidates, references=["seasonal_naive", "croston"], selection=selection)
        return demand.choose_demand_champion(window, {c: forecasts[c] for c in candidates}, {c: metrics[c] for c in candidates}, cfg)

    noise = choose(["seasonal_naive", "moving_median", "croston"])
    assert noise["best_on_valid"] == "moving_median" and noise["champion"] == "croston", noise["note"]
    assert 0 < noise["lead_over_reference"] <= noise["se_of_lead"]
    assert choose(["seasonal_naive", "moving_median", "croston"], rule="best")["champion"] == "moving_median"
    clear = choose(["seasonal_naive", "moving_median", "croston", "cnn"])
    assert clear["champion"] == "cnn" and clear["lead_over_reference"] > clear["se_of_lead"] > 0
    assert choose(["seasonal_naive", "croston"])["champion"] == "croston"
    # a reference best on validation is served, and the noise of the best other candidate's gap is kept for the gate
    forecasts["lstm"] = level + rng.normal(0, 0.6, (n, h)).clip(-level, None)
    metrics["lstm"] = {"wape": demand.wape(actual, forecasts["lstm"])}
    behind = choose(["seasonal_naive", "croston", "lstm"])
    assert behind["champion"] == "croston" and behind["best_learned_on_valid"] == "lstm"
    assert behind["lead_over_reference"] == pytest.approx(metrics["croston"]["wape"] - metrics["lstm"]["wape"], abs=1e-5)
    assert behind["lead_over_reference"] < 0
    assert behind["se_of_lead"] > 0 and "a reference, is the best" in behind["note"]


@pytest.mark.parametrize("champion", ["croston", "cnn"])
def test_scorer_serves_any_family(tmp_path, demand_params, champion):
    """Whatever family wins is what the service loads: a statistical one fits on the request's history."""
    events = tmp_path / "events.parquet"
    _shop_events().to_parquet(events)
    demand_params.demand.candidates = [champion]
    out = tmp_path / "artifacts" / "demand"
    demand.train_demand(demand_params, events, out)
    scorer = DemandScorer(out)
    assert scorer.family == {"croston": "statsforecast", "cnn": "keras"}[champion]
    (a,) = scorer.forecast([DemandRequest(series_id="x", level="item", history=[0, 4, 0, 4, 0, 4, 0, 4])], "t")
    assert len(a.units) == 7 and min(a.units) >= 0 and max(a.units) > 0


def test_the_gate_forecasts_the_challengers_validation_window_with_the_champion(tmp_path, demand_params):
    """Four weeks later the champion has seen none of the new validation window: the gate compares the challenger with
    the champion's own forecast of that window (the WAPE computed here by hand), not with the score of its run; a rerun
    on the same window compares stored scores; both say which."""
    import uuid

    from shopsight import registry

    task = f"demand{uuid.uuid4().hex[:8]}"  # a registry task of its own
    demand_params.demand.candidates = ["seasonal_naive", "moving_average", "croston"]
    out, events = tmp_path / "artifacts" / "demand", tmp_path / "events.parquet"

    def run(frame: pd.DataFrame):
        frame.to_parquet(events)
        demand.train_demand(demand_params, events, out)
        metrics = demand.evaluate_demand(demand_params, events, out)
        return metrics, demand.register_demand(demand_params, out, events, task=task)

    first, first_reg = run(_shop_events())
    assert first_reg.promoted and first["gate_rows"]["labels_until"] == f"{first['valid_window'][0]}T00:00:00+00:00"
    later_events = _shop_events(98)
    later, later_reg = run(later_events)
    series = daily_units(later_events)
    window = window_at(series, demand.split_origins(len(series.days), demand_params.demand)["valid"][-1], 7)
    by_hand = demand.wape(window.actual[np.asarray(window.levels) == "item"],
                          load_candidate(registry.model_path(first_reg.tag)).predict(window)[np.asarray(window.levels) == "item"])
    main = next(r for r in later_reg.decision.rows if r.metric == "wape")
    assert main.champion == pytest.approx(by_hand) and main.challenger == later["valid"][later["champion"]]["wape"]
    assert by_hand != pytest.approx(first["valid"][first["champion"]]["wape"])
    assert later_reg.decision.basis.startswith("re-scored on the challenger's validation rows (wape")

    demand_params.demand.candidates = ["croston", "seasonal_naive"]  # another champion file on the same window
    _, again = run(later_events)
    assert again.registered and again.decision.basis == "stored validation scores, from the same validation rows as the challenger's"
