import numpy as np
import pytest

from shopsight.calibration import (
    Calibrator,
    class_weights,
    classification_metrics,
    expected_calibration_error,
    fit_calibrator,
    lift_at_top,
    reliability_table,
    within_group_roc_auc,
)


def _inflated(n=20000, seed=0):
    """True probabilities and an over-confident, upward-biased version (what class weighting produces)."""
    rng = np.random.default_rng(seed)
    p_true = 1 / (1 + np.exp(-rng.normal(-2.0, 1.2, n)))
    y = (rng.random(n) < p_true).astype(int)
    z = np.log(p_true / (1 - p_true))
    return y, 1 / (1 + np.exp(-(1.6 * z + 1.5)))


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibration_on_held_out_rows_repairs_inflated_probabilities(method):
    y_fit, p_fit = _inflated(seed=1)
    y_eval, p_eval = _inflated(seed=2)
    cal = fit_calibrator(p_fit, y_fit, method)
    before = expected_calibration_error(y_eval, p_eval)
    after = expected_calibration_error(y_eval, cal.apply(p_eval))
    assert before > 0.05
    assert after < 0.02
    assert np.all(np.diff(cal.apply(np.linspace(0.01, 0.99, 50))) >= -1e-12)  # monotone: the ranking survives


def test_calibrator_round_trips_through_json(tmp_path):
    y, p = _inflated()
    cal = fit_calibrator(p, y, "platt")
    cal.to_json(tmp_path / "c.json")
    assert np.allclose(Calibrator.from_json(tmp_path / "c.json").apply(p), cal.apply(p))
    assert np.allclose(fit_calibrator(p, y, "none").apply(p), np.clip(p, 1e-7, 1 - 1e-7))


def test_calibration_needs_both_classes_and_a_known_method():
    with pytest.raises(ValueError, match="both classes"):
        fit_calibrator(np.array([0.2, 0.3]), np.array([1, 1]), "platt")
    with pytest.raises(ValueError, match="unknown calibration method"):
        fit_calibrator(np.array([0.2, 0.3]), np.array([0, 1]), "magic")


def test_reliability_table_and_ece_by_hand():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.05, 0.05, 0.95, 0.85])
    table = reliability_table(y, p, n_bins=10)
    assert table["count"].sum() == 4
    assert table.loc[0, "observed_rate"] == 0 and table.loc[9, "observed_rate"] == 1
    # |0 - 0.05| * 2 + |1 - 0.95| + |1 - 0.85|, over 4 rows
    assert expected_calibration_error(y, p, 10) == pytest.approx((0.1 + 0.05 + 0.15) / 4)


def test_lift_at_top_decile():
    y = np.array([1] + [0] * 9 + [1] * 0 + [0] * 10)  # 1 positive in 20 rows, ranked first
    score = -np.arange(20.0)
    assert lift_at_top(y, score, 0.1) == pytest.approx((1 / 2) / (1 / 20))


def test_classification_metrics_keys_and_class_weights():
    y, p = _inflated(2000)
    m = classification_metrics(y, p)
    assert set(m) == {"roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_top_decile"}
    w = class_weights(np.array([0, 0, 0, 1]), "balanced")
    assert w[1] * 1 == pytest.approx(w[0] * 3)  # each class carries the same total weight
    assert class_weights(np.array([0, 1]), "none") is None


def test_roc_auc_within_cutoffs_counts_only_pairs_of_the_same_cutoff():
    """Two cutoffs with different label rates and a score that only tells the cutoffs apart: pooled, it looks
    good; within each cutoff it ranks nothing (0.5). The weighting is by pairs: the AUC over same-cutoff pairs."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    groups = np.repeat([0, 1], [600, 400])
    y = np.concatenate([rng.random(600) < 0.4, rng.random(400) < 0.05]).astype(int)
    tells_cutoff = np.where(groups == 0, 0.9, 0.1)
    assert roc_auc_score(y, tells_cutoff) > 0.7
    assert within_group_roc_auc(y, tells_cutoff, groups) == pytest.approx(0.5)
    score = rng.random(1000) + y * 0.5 + (groups == 0) * 2
    pairs = [(score[i] > score[j]) + 0.5 * (score[i] == score[j])
             for g in (0, 1) for i in np.flatnonzero((groups == g) & (y == 1)) for j in np.flatnonzero((groups == g) & (y == 0))]
    assert within_group_roc_auc(y, score, groups) == pytest.approx(np.mean(pairs))
    assert within_group_roc_auc(y, score, np.zeros(1000)) == pytest.approx(roc_auc_score(y, score))
    m = classification_metrics(y, np.clip(score / 4, 0, 1), groups=groups)
    assert m["roc_auc"] == pytest.approx(np.mean(pairs)) and m["roc_auc_pooled"] == pytest.approx(roc_auc_score(y, score))
