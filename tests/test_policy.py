"""The drift policy's decision logic, cooldown state and the weekly report's pure helpers."""

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from monitoring.policy import (
    ColumnDrift,
    QualityCheck,
    SourceDrift,
    column_tests,
    counted_features,
    decide,
    load_state,
    record_trigger,
)
from monitoring.weekly import event_mix, item_reference_prices, matured_quality, served_inputs, week_label, week_window
from shopsight.config import DriftPolicyParams, StatTestParams

AT = datetime(2026, 3, 23, tzinfo=timezone.utc)


def _source(drifted: list[str], columns: list[str], rows: int = 1000, critical: list[str] | None = None, counted=None) -> SourceDrift:
    cols = [ColumnDrift(c, "Wasserstein distance (normed)", 0.1, 0.2 if c in drifted else 0.01, c in drifted) for c in columns]
    return SourceDrift("user_features", rows, rows, False, cols, columns if counted is None else counted, critical or [])


def test_share_at_threshold_triggers_and_below_does_not():
    policy = DriftPolicyParams(drift_share=0.3)
    cols = [f"f{i}" for i in range(10)]
    fired = decide(policy, [_source(cols[:3], cols)], None, {}, AT)
    quiet = decide(policy, [_source(cols[:2], cols)], None, {}, AT)
    assert fired.retrain and "3/10 features drifted" in fired.reasons[0]
    assert not quiet.retrain and quiet.reasons == [] and "2/10" in quiet.notes[0]


def test_one_critical_column_triggers_alone():
    policy = DriftPolicyParams()
    source = SourceDrift("event_mix", 5000, 5000, False,
                         [ColumnDrift("event_price_change", "Jensen-Shannon distance", 0.05, 0.3, True),
                          ColumnDrift("event_type", "Jensen-Shannon distance", 0.1, 0.01, False)], [], ["event_price_change"])
    decision = decide(policy, [source], None, {}, AT)
    assert decision.retrain and "event_price_change (0.300)" in decision.reason


def test_too_few_rows_is_reported_not_judged():
    cols = ["a", "b"]
    decision = decide(DriftPolicyParams(min_rows=500), [_source(cols, cols, rows=100)], None, {}, AT)
    assert not decision.retrain and "min_rows" in decision.notes[0]


def test_a_source_with_no_counted_feature_is_reported_not_silently_passed():
    """monitoring.policy.features naming no feature of the model leaves nothing that could fire: the decision says so."""
    policy = DriftPolicyParams(features=["not_a_feature"])
    counted, excluded = counted_features(policy, ["views_7d", "cart_rate"])
    source = SourceDrift("user_features", 1000, 1000, False, _source(["views_7d"], ["views_7d", "cart_rate"]).columns, counted,
                         [], excluded)
    decision = decide(policy, [source], None, {}, AT)
    assert counted == [] and not decision.retrain
    assert len(decision.notes) == 1 and "no feature counts" in decision.notes[0] and "not_a_feature" in decision.notes[0]


def test_quality_drop_triggers_only_with_enough_outcomes():
    policy = DriftPolicyParams(quality_drop=0.05, min_outcomes=100)
    drop = QualityCheck("roc_auc", 0.70, 0.80, 500, 50, ("a", "b"))
    small = QualityCheck("roc_auc", 0.60, 0.80, 50, 5, ("a", "b"))
    steady = QualityCheck("roc_auc", 0.78, 0.80, 500, 50, ("a", "b"))
    assert decide(policy, [], drop, {}, AT).retrain
    assert not decide(policy, [], small, {}, AT).retrain
    assert not decide(policy, [], steady, {}, AT).retrain


def test_cooldown_suppresses_a_second_trigger_then_expires(tmp_path):
    policy = DriftPolicyParams(cooldown_days=7)
    cols = ["a", "b"]
    state_file = tmp_path / "state.json"
    first = decide(policy, [_source(cols, cols)], None, load_state(state_file), AT)
    assert first.retrain
    record_trigger(state_file, first, "2026-W12", {"mode": "direct"})
    again = decide(policy, [_source(cols, cols)], None, load_state(state_file), AT + timedelta(days=3))
    assert not again.retrain and again.suppressed_by_cooldown and again.reasons
    later = decide(policy, [_source(cols, cols)], None, load_state(state_file), AT + timedelta(days=8))
    assert later.retrain
    assert load_state(state_file)["history"][0]["week"] == "2026-W12"


def test_counted_features_drop_excluded_and_truncated_windows():
    policy = DriftPolicyParams(exclude=["first_seen_days"])
    counted, excluded = counted_features(policy, ["views_7d", "views_84d", "first_seen_days", "cart_rate"], history_days=30)
    assert counted == ["views_7d", "cart_rate"]
    assert "truncated" in excluded["views_84d"] and "exclude" in excluded["first_seen_days"]
    counted_all, _ = counted_features(policy, ["views_7d", "views_84d"], history_days=None)
    assert counted_all == ["views_7d", "views_84d"]


def test_per_column_override_beats_the_type_default():
    policy = DriftPolicyParams(per_column={"event_category": StatTestParams(stattest="psi", threshold=0.2)})
    methods, thresholds = column_tests(policy, ["views_7d"], ["event_category", "event_type"])
    assert methods == {"views_7d": "wasserstein", "event_category": "psi", "event_type": "jensenshannon"}
    assert thresholds["event_category"] == 0.2


def test_week_window_and_iso_label():
    start, end = week_window("2026-03-23")
    assert (start, end) == (pd.Timestamp("2026-03-16", tz="UTC"), pd.Timestamp("2026-03-23", tz="UTC"))
    assert week_label("2026-03-23") == "2026-W12"


def test_event_mix_flags_price_rises_above_list_not_promotions():
    ref = pd.DataFrame({"item_id": ["a", "a", "b"], "price": [10.0, 8.0, 5.0], "category": ["c1", "c1", "c2"],
                        "event_type": ["view"] * 3})
    cur = pd.DataFrame({"item_id": ["a", "a", "b", "z"], "price": [8.0, 10.0, 6.0, 1.0], "category": ["c1", "c1", "c2", "c3"],
                        "event_type": ["view", "cart", "view", "view"]})
    mix = event_mix(cur, item_reference_prices(ref), tolerance=0.05)
    assert mix["event_price_change"].tolist() == ["list", "list", "up", "new item"]


def test_served_inputs_maps_logged_model_inputs_back_to_raw_features():
    # the service logs the model's input: log1p of the raw features (shopsight.features.model_input)
    log = pd.DataFrame({"endpoint": ["predict_propensity", "recommend"],
                        "features": [{"a": float(np.log1p(3.0)), "b": 0.0}, {"a": 0.0, "b": 0.0}],
                        "output": [{"probability": 0.3}, {"probability": 0.9}]})
    served = served_inputs(log, ["a", "b"])
    assert served.to_dict("records") == [pytest.approx({"a": 3.0, "b": 0.0, "prediction": 0.3})]
    with pytest.raises(ValueError, match="missing input feature"):
        served_inputs(log, ["a", "c"])


def test_matured_quality_labels_purchases_within_the_horizon_only():
    week_end = pd.Timestamp("2026-03-23", tz="UTC")
    # predictions made in the week whose 7-day horizon ended by week_end: [03-09, 03-16)
    ts = pd.to_datetime(["2026-03-10", "2026-03-10", "2026-03-11", "2026-03-12", "2026-03-20"], utc=True)
    log = pd.DataFrame({"timestamp": ts, "user_id": ["u1", "u2", "u3", "u4", "u5"], "probability": [0.9, 0.2, 0.7, 0.1, 0.5]})
    events = pd.DataFrame({"user_id": ["u1", "u3", "u4", "u5"], "event_type": ["purchase"] * 4,
                           "timestamp": pd.to_datetime(["2026-03-12", "2026-03-17", "2026-03-30", "2026-03-21"], utc=True)})
    scored, check = matured_quality(log, events, week_end, horizon_days=7, baseline=0.8)
    assert check.rows == 4  # u5 predicted after the matured window
    assert scored["target"].tolist() == [1, 0, 1, 0]  # u4 bought after its horizon
    assert check.value == pytest.approx(1.0) and check.positives == 2
    assert np.isclose(check.baseline, 0.8)


def test_read_log_columnar_reader_matches_records_and_survives_a_torn_line(tmp_path):
    from monitoring.weekly import read_log
    from shopsight.prediction_log import Prediction, PredictionLog

    log = PredictionLog(tmp_path)
    t = datetime(2026, 3, 17, 10, tzinfo=timezone.utc)
    log.append("predict_propensity", "propensity:1", [Prediction("u1", {"a": 0.5, "b": 1.0}, {"probability": 0.2}, t)], now=t)
    log.append("predict_propensity", "propensity:1", [Prediction("u2", {"a": 0.0, "b": 2.0}, {"probability": 0.7}, t)],
               now=t + timedelta(hours=1))
    log.close()
    torn = sorted(tmp_path.glob("predictions-*.jsonl"))[-1]
    with open(torn, "ab") as handle:
        handle.write(b'{"timestamp": "2026-03-17T11:00')  # a crash mid-write
    frame = read_log(tmp_path, pd.Timestamp("2026-03-16", tz="UTC"), pd.Timestamp("2026-03-23", tz="UTC"))
    assert frame["user_id"].tolist() == ["u1", "u2"]
    served = served_inputs(frame, ["a", "b"])
    assert served["prediction"].tolist() == [0.2, 0.7]
    assert served["b"].tolist() == pytest.approx([np.expm1(1.0), np.expm1(2.0)])
    assert read_log(tmp_path, pd.Timestamp("2026-03-23", tz="UTC"), pd.Timestamp("2026-03-30", tz="UTC")) is None
