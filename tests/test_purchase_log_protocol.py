"""The buy-till-you-die protocol on a purchase log, end to end: a CDNOW-format file of 78 weeks, "fit on weeks
1-39, predict weeks 40-78" (features.split: calibration_holdout), ingest -> datasets -> every candidate ->
champion on validation -> test report for propensity and churn."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pandas as pd
import pytest

from shopsight.config import Params

START = pd.Timestamp("1997-01-01")
WEEKS = 78


def _cdnow_file(path, n_customers: int = 500, seed: int = 0) -> None:
    """Customers acquired over the first 12 weeks, buying as a Poisson process until they drop out (BG/NBD-like)."""
    rng = np.random.default_rng(seed)
    lines = []
    end = START + pd.Timedelta(weeks=WEEKS)
    for c in range(1, n_customers + 1):
        t = START + pd.Timedelta(days=int(rng.integers(0, 84)))
        rate = rng.gamma(1.0, 1 / 20.0)  # purchases per day
        alive = True
        while alive and t < end:
            lines.append(f"{c:05d} {t:%Y%m%d} {int(rng.integers(1, 4))} {rng.uniform(5, 60):.2f}")
            t += pd.Timedelta(days=max(1, int(rng.exponential(1 / rate))))
            alive = rng.random() > 0.15
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def protocol_run(tmp_path_factory):
    from shopsight.churn import run_churn_features
    from shopsight.ingest import ingest
    from shopsight.pipeline import run_features
    from shopsight.tasks import USER_TASKS
    from shopsight.tasks.user_binary import ChampionScorer, evaluate_user_task, train_user_task

    root = tmp_path_factory.mktemp("cdnow")
    _cdnow_file(root / "CDNOW_master.txt")
    fast = ["frequency", "recency", "bgnbd", "logistic_regression"]
    params = Params.model_validate({
        "data": {"source": "cdnow", "path": str(root / "CDNOW_master.txt")},
        # a panel of whole days: observation runs to the end of week 78 (the last timestamps are midnights)
        "features": {"windows_days": [28, 91], "split": "calibration_holdout", "test_cutoff": "1997-10-01", "data_end": "1998-07-01T00:00:00",
                     "horizon_days": 39 * 7, "train_horizon_days": 91, "n_train_cutoffs": 3, "cutoff_step_days": 14},
        "propensity": {"candidates": fast, "references": ["frequency", "recency", "bgnbd"]},
        "churn": {"horizon_days": 39 * 7, "candidates": ["recency", "frequency", "bgnbd", "logistic_regression"],
                  "references": ["recency", "frequency", "bgnbd"]},
    })
    out = {}
    with contextlib.chdir(root):
        ingest(params)
        run_features(params)
        run_churn_features(params)
        for name, task in USER_TASKS.items():
            train_user_task(task, params)
            out[name] = evaluate_user_task(task, params)
            out[f"{name}_data"] = pd.read_parquet(root / task.dataset)
            out[f"{name}_scores"] = pd.read_parquet(root / task.candidates_dir / "scores.parquet")
            out[f"{name}_scorer"] = ChampionScorer(root / task.model_dir)
    return out


def test_weeks_1_39_calibrate_and_weeks_40_78_are_the_holdout(protocol_run):
    data = protocol_run["propensity_data"]
    test = data[data["split"] == "test"]
    assert set(test["cutoff"]) == {pd.Timestamp("1997-10-01", tz="UTC")}, "the holdout starts in week 40"
    assert set(test["horizon_days"]) == {273}, "the holdout label window is weeks 40-78"
    inner = data[data["split"] != "test"]
    assert set(inner["horizon_days"]) == {91}
    assert (inner["cutoff"] + pd.to_timedelta(inner["horizon_days"], unit="D")).max() <= pd.Timestamp("1997-10-01", tz="UTC"), \
        "training and validation labels stay inside the calibration period"


@pytest.mark.parametrize("task", ["propensity", "churn"])
def test_every_candidate_is_reported_on_the_holdout_and_the_champion_chosen_on_validation(protocol_run, task):
    metrics = protocol_run[task]
    names = [n for n in metrics["candidates"]]
    assert set(names) <= set(metrics["test"]) and set(names) <= set(metrics["valid"])
    # the default rule: the best on validation, unless it is a learned model within the noise of the best reference
    best = max(names, key=lambda n: metrics["valid"][n]["roc_auc"])
    rule = metrics["selection"]
    assert rule["rule"] == "beat_reference" and rule["best_on_valid"] == best
    if best == "logistic_regression":
        beaten = rule["lead_over_reference"] > rule["se_of_lead"]
        assert metrics["champion"] == (best if beaten else rule["best_reference_on_valid"])
    else:
        assert metrics["champion"] == best
    assert metrics["horizon_days"] == 273 and metrics["served_horizon_days"] == 91
    assert metrics["targets"]["best_reference"] is not None and metrics["targets"]["met"] in (True, False)
    json.dumps(metrics, allow_nan=False)  # strict JSON: no NaN anywhere
    # a purchase log carries the BTYD signal: the fitted BG/NBD ranks the holdout better than chance
    assert metrics["test"]["bgnbd"]["roc_auc"] > 0.6


@pytest.mark.parametrize("task", ["propensity", "churn"])
def test_the_champion_is_served_whatever_its_family_for_the_window_its_calibration_was_fitted_on(protocol_run, task):
    from shopsight.features import model_input

    metrics, scorer = protocol_run[task], protocol_run[f"{task}_scorer"]
    assert scorer.name == metrics["champion"] and scorer.family == metrics["champion_family"]
    assert scorer.horizon_days == metrics["served_horizon_days"] == 91
    data = protocol_run[f"{task}_data"]
    served = scorer.predict(model_input(data[data["split"] == "test"], scorer.columns))
    assert np.isfinite(served).all() and ((served >= 0) & (served <= 1)).all() and served.std() > 0
