"""Model families behind one interface: each fits, predicts, and comes back from disk unchanged; selection and
the honest target."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from shopsight.candidates import (available, champion_vs_references, get_model, load_candidate, save_candidate,
                                  select_champion)
from shopsight.candidates.user_rows import UserRows

COLUMNS = ["purchase_days_total", "repeat_purchase_days", "first_purchase_days_ago", "purchase_span_days", "tenure_days",
           "active_days_total", "recency_days", "noise_a", "noise_b"]


def _rows(n: int, seed: int, xor: bool = False) -> UserRows:
    """Users of a buy-till-you-die shop: frequent, recently active buyers buy again; `xor` adds a label that only
    an interaction of the two noise columns explains (trees can learn it, a linear model cannot)."""
    rng = np.random.default_rng(seed)
    tenure = rng.uniform(10, 300, n)
    first = tenure * rng.uniform(0.5, 1.0, n)
    days = rng.poisson(first / 30.0) + 1
    span = np.where(days > 1, first * rng.uniform(0.2, 1.0, n), 0.0)
    recency = np.clip(first - span + rng.uniform(0, 3, n), 0, tenure)
    a, b = rng.uniform(0, 4, n), rng.uniform(0, 4, n)
    raw = np.column_stack([days, days - 1, first, span, tenure, days + rng.poisson(2, n), recency, a, b])
    logit = 0.8 * np.log1p(days) - 0.03 * recency
    if xor:
        logit = 3.0 * np.sign((a - 2) * (b - 2))
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64")
    cutoff = np.where(rng.random(n) < 0.5, 0, 7 * 86_400 * 10**9).astype("int64")
    return UserRows(np.log1p(raw).astype("float32"), COLUMNS, np.full(n, 14.0), y, cutoff)


def _auc(y, p) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


CONFIGS = {
    "rule": {"column": "recency_days", "sign": -1},
    "bgnbd": {"events": "purchase", "score": "buy", "time_unit_days": 7.0, "penalizer": 0.001},
    "paretonbd": {"events": "purchase", "score": "buy", "time_unit_days": 7.0, "penalizer": 0.001},
    "logistic_regression": {"C": 1.0, "max_iter": 500},
    "lightgbm": {"num_boost_round": 80, "early_stopping_rounds": 20},
    "mlp": {"hidden_units": [8], "epochs": 6, "batch_size": 128, "learning_rate": 0.01, "patience": 2},
}


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_every_family_fits_scores_and_comes_back_from_disk_unchanged(family, tmp_path):
    train, valid = _rows(3000, 1), _rows(1500, 2)
    model = get_model("user_binary", family, CONFIGS[family])
    model.fit(train, valid)
    p = model.predict(valid)
    assert p.shape == (len(valid),) and np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    assert _auc(valid.y, p) > 0.6, f"{family} should find the frequency/recency signal"
    save_candidate(model, tmp_path / family)
    meta = json.loads((tmp_path / family / "candidate.json").read_text())
    assert meta["family"] == type(model).family and "pickle" not in " ".join(p.name for p in (tmp_path / family).iterdir())
    again = load_candidate(tmp_path / family)
    np.testing.assert_allclose(again.predict(valid), p, rtol=1e-5, atol=1e-6)


def test_trees_learn_an_interaction_that_a_linear_model_cannot():
    train, valid = _rows(4000, 3, xor=True), _rows(2000, 4, xor=True)
    trees = get_model("user_binary", "lightgbm", CONFIGS["lightgbm"])
    linear = get_model("user_binary", "logistic_regression", CONFIGS["logistic_regression"])
    trees.fit(train, valid), linear.fit(train, valid)
    assert _auc(valid.y, trees.predict(valid)) > 0.8 > _auc(valid.y, linear.predict(valid)) + 0.2


def test_a_rule_ranks_by_its_feature_in_its_direction():
    rows = _rows(500, 5)
    up = get_model("user_binary", "rule", {"column": "recency_days", "sign": 1})
    down = get_model("user_binary", "rule", {"column": "recency_days", "sign": -1})
    order = np.argsort(rows.raw("recency_days"))
    assert np.all(np.diff(up.predict(rows)[order]) >= 0) and np.all(np.diff(down.predict(rows)[order]) <= 0)
    with pytest.raises(KeyError, match="not among the model's columns"):
        get_model("user_binary", "rule", {"column": "nope", "sign": 1}).predict(rows)


@pytest.mark.parametrize("btyd", ["bgnbd", "paretonbd"])
def test_btyd_scores_frequent_recent_buyers_higher_and_long_silence_lower(btyd):
    train = _rows(3000, 6)
    model = get_model("user_binary", btyd, CONFIGS[btyd])
    model.fit(train, train)
    raw = {c: np.array(v, dtype="float64") for c, v in {
        "purchase_days_total": [6, 6, 1], "repeat_purchase_days": [5, 5, 0], "first_purchase_days_ago": [100, 100, 100],
        "purchase_span_days": [95, 20, 0], "tenure_days": [100, 100, 100], "active_days_total": [6, 6, 1], "recency_days": [5, 80, 100],
        "noise_a": [0, 0, 0], "noise_b": [0, 0, 0]}.items()}
    rows = UserRows(np.log1p(np.column_stack([raw[c] for c in COLUMNS])), COLUMNS, np.full(3, 14.0))
    p = model.predict(rows)
    assert p[0] > p[1], "same frequency, longer silence: less likely to buy"
    assert p[0] > p[2], "a frequent recent buyer beats a one-time buyer"
    churn = get_model("user_binary", btyd, {**CONFIGS[btyd], "events": "activity", "score": "no_activity"})
    churn.fit(train, train)
    q = churn.predict(rows)
    assert q[1] > q[0], "longer silence: more likely to stay inactive"


def test_get_model_names_the_known_candidates():
    assert {"rule", "bgnbd", "paretonbd", "logistic_regression", "lightgbm", "mlp"} <= set(available("user_binary"))
    with pytest.raises(ValueError, match="unknown user_binary candidate 'xgb'; known: .*lightgbm"):
        get_model("user_binary", "xgb")


def test_selection_prefers_the_simpler_candidate_on_a_tie_and_never_nan():
    valid = {"rule": {"auc": 0.7}, "mlp": {"auc": 0.7}, "lgb": {"auc": float("nan")}}
    assert select_champion(valid, "auc", order=["rule", "lgb", "mlp"]) == "rule"
    assert select_champion({"a": {"wape": 0.5}, "b": {"wape": 0.4}}, "wape", lower_is_better=True) == "b"
    with pytest.raises(ValueError, match="no candidate has a finite"):
        select_champion({"a": {"auc": float("nan")}}, "auc")


def test_the_target_compares_with_the_strongest_reference_and_says_not_met():
    test = {"mlp": {"auc": 0.74}, "frequency": {"auc": 0.735}, "recency": {"auc": 0.70}, "bgnbd": {"auc": 0.72}}
    t = champion_vs_references(test, "mlp", ["frequency", "recency", "bgnbd"], "auc", margin=0.01)
    assert t["best_reference"] == "frequency" and t["gap"] == pytest.approx(0.005) and t["met"] is False
    assert t["note"].startswith("not met")
    # a reference that is the champion is compared with the next-best reference
    t = champion_vs_references(test, "frequency", ["frequency", "recency", "bgnbd"], "auc")
    assert t["best_reference"] == "bgnbd" and t["met"] is True and t["champion_is_reference"]
    assert t["note"].startswith("met: frequency (itself a reference")
    low = champion_vs_references({"m": {"wape": 0.5}, "naive": {"wape": 0.6}}, "m", ["naive"], "wape", lower_is_better=True)
    assert low["met"] and low["gap"] == pytest.approx(0.1)


def test_a_blend_of_fitted_members_scores_between_them_and_comes_back_from_disk(tmp_path):
    train, valid = _rows(3000, 7), _rows(1500, 8)
    members = {}
    for family in ("logistic_regression", "lightgbm"):
        members[family] = get_model("user_binary", family, CONFIGS[family])
        members[family].fit(train, valid)
    blend = get_model("user_binary", "blend", {"members": ["logistic_regression", "lightgbm"]})
    with pytest.raises(ValueError, match="needs at least two fitted members"):
        blend.fit(train, valid)
    blend.members = members
    blend.fit(train, valid)
    p = blend.predict(valid)
    aucs = {n: _auc(valid.y, m.predict(valid)) for n, m in members.items()}
    assert _auc(valid.y, p) >= min(aucs.values()) - 0.01
    reasons = blend.explain(valid.take(np.arange(len(valid)) < 2), 2)
    assert len(reasons) == 2 and all(len(r) == 2 for r in reasons)
    save_candidate(blend, tmp_path / "blend")
    np.testing.assert_allclose(load_candidate(tmp_path / "blend").predict(valid), p, rtol=1e-6)


def test_a_stacked_model_learns_from_its_inputs_scores_what_its_own_features_cannot_tell_it(tmp_path):
    """A logistic regression cannot learn an interaction of two features; stacked over a tree model's score it ranks
    almost as well as the trees. It needs its inputs fitted first, follows its base on early stopping, names the input
    among its explanations' features, and comes back from disk with its inputs."""
    train, valid = _rows(3000, 3, xor=True), _rows(1500, 4, xor=True)
    trees = get_model("user_binary", "lightgbm", CONFIGS["lightgbm"])
    trees.fit(train, valid)
    alone = get_model("user_binary", "logistic_regression", CONFIGS["logistic_regression"])
    alone.fit(train, valid)
    stacked = get_model("user_binary", "stacked", {"base": "logistic_regression", "base_config": CONFIGS["logistic_regression"],
                                                  "inputs": ["lightgbm"]})
    assert stacked.early_stopping is False
    assert get_model("user_binary", "stacked", {"base": "lightgbm", "inputs": ["bgnbd"]}).early_stopping is True
    with pytest.raises(ValueError, match=r"needs its inputs \['lightgbm'\] fitted"):
        stacked.fit(train, valid)
    stacked.inputs = {"lightgbm": trees}
    stacked.fit(train, valid)
    p = stacked.predict(valid)
    auc_alone, auc_trees, auc_stacked = _auc(valid.y, alone.predict(valid)), _auc(valid.y, trees.predict(valid)), _auc(valid.y, p)
    assert auc_alone < 0.6 < auc_trees - 0.1, (auc_alone, auc_trees)
    assert auc_stacked > auc_trees - 0.02, (auc_stacked, auc_trees)
    weight: dict[str, float] = {}
    for row in stacked.explain(valid.take(np.arange(len(valid)) < 200), len(COLUMNS) + 1):
        for c in row:
            weight[c["feature"]] = weight.get(c["feature"], 0.0) + abs(c["contribution"])
    assert max(weight, key=weight.get) == "lightgbm_log_odds", weight  # the input that carries the signal weighs most
    save_candidate(stacked, tmp_path / "stacked")
    back = load_candidate(tmp_path / "stacked")
    assert list(back.inputs) == ["lightgbm"]
    np.testing.assert_allclose(back.predict(valid), p, rtol=1e-6)
    assert back.predict(valid.take(np.zeros(len(valid), dtype=bool))).shape == (0,)


def test_stacked_inputs_must_be_candidates_listed_before_it():
    from shopsight.config import PropensityParams

    ok = PropensityParams(candidates=["frequency", "bgnbd", "lgb_bgnbd"], references=["frequency"], stacked={"lgb_bgnbd": {"base": "lightgbm", "inputs": ["bgnbd"]}})
    assert ok.stacked["lgb_bgnbd"].base == "lightgbm"
    with pytest.raises(ValueError, match=r"stacked.lgb_bgnbd.inputs \['bgnbd'\] must be candidates listed before 'lgb_bgnbd'"):
        PropensityParams(candidates=["frequency", "lgb_bgnbd", "bgnbd"], references=["frequency"], stacked={"lgb_bgnbd": {"base": "lightgbm", "inputs": ["bgnbd"]}})
    with pytest.raises(ValueError, match="taken by another candidate"):
        PropensityParams(candidates=["frequency", "bgnbd"], references=["frequency"], stacked={"bgnbd": {"base": "lightgbm", "inputs": ["frequency"]}})


def test_one_se_rule_keeps_the_simpler_candidate_unless_the_better_one_is_beyond_the_noise():
    from sklearn.metrics import roc_auc_score

    from shopsight.candidates import paired_bootstrap_se

    rng = np.random.default_rng(3)
    n = 400
    y = rng.integers(0, 2, n)
    signal = y + rng.normal(0, 1.0, n)
    scores = {"rule": signal + rng.normal(0, 0.1, n),            # slightly noisier than the model: within the noise
              "model": signal,
              "weak": y + rng.normal(0, 3.0, n)}                   # clearly worse
    valid = {k: {"auc": roc_auc_score(y, v)} for k, v in scores.items()}
    assert max(valid, key=lambda k: valid[k]["auc"]) == "model"
    se = paired_bootstrap_se(y, scores, "model", roc_auc_score, n_boot=100, seed=0)
    assert se["model"] == 0.0 and 0 < se["rule"] < se["weak"]
    order = ["weak", "rule", "model"]
    assert select_champion(valid, "auc", order=order) == "model"          # plain best
    tol = {k: 1.0 * v for k, v in se.items()}
    assert valid["model"]["auc"] - valid["rule"]["auc"] <= tol["rule"]
    assert select_champion(valid, "auc", order=order, tolerance=tol) == "rule"   # simplest within one SE
    # a gap far beyond the SE keeps the better model, and NaN tolerances never let a candidate win
    far = {**valid, "rule": {"auc": valid["model"]["auc"] - 10 * se["rule"]}}
    assert select_champion(far, "auc", order=order, tolerance=tol) == "model"
    assert select_champion(valid, "auc", order=order, tolerance={"weak": float("nan")}) == "model"
    # lower-is-better metrics follow the same rule
    assert select_champion({"a": {"wape": 0.52}, "b": {"wape": 0.50}}, "wape", lower_is_better=True, order=["a", "b"],
                           tolerance={"a": 0.03}) == "a"


def test_bootstrap_draw_takes_whole_users_and_is_the_row_bootstrap_without_repeats():
    from shopsight.candidates.base import bootstrap_draw

    users = np.array(["u1", "u2", "u3", "u1", "u2", "u3", "u4"])  # u4 at one cutoff only
    draw = bootstrap_draw(len(users), users)
    rng = np.random.default_rng(0)
    for _ in range(50):
        idx = draw(rng)
        picked = users[idx]
        for user in set(picked):  # every drawn user comes with all their rows, as often as drawn
            count = int((picked == user).sum())
            assert count % int((users == user).sum()) == 0
        assert len(set(picked)) <= 4
    assert np.array_equal(bootstrap_draw(5, np.arange(5))(np.random.default_rng(3)), np.random.default_rng(3).integers(0, 5, 5))
    assert np.array_equal(bootstrap_draw(5)(np.random.default_rng(3)), np.random.default_rng(3).integers(0, 5, 5))


def test_a_learned_champion_must_lead_the_best_reference_beyond_the_validation_noise():
    """selection.rule beat_reference (the default): the best on validation is served only when it is a reference or
    leads the best reference by more than k_se paired-bootstrap SEs; otherwise the reference is."""
    from shopsight.calibration import within_group_roc_auc
    from shopsight.config import PropensityParams
    from shopsight.tasks.user_binary import choose_on_validation

    rng = np.random.default_rng(3)
    n = 600
    y = rng.integers(0, 2, n)
    signal = y + rng.normal(0, 1.0, n)
    scores = pd.DataFrame({"label": y, "cutoff": pd.Timestamp("2026-01-01", tz="UTC"), "user_id": [f"u{i}" for i in range(n)],
                           "frequency": y + rng.normal(0, 2.0, n),        # a weak reference
                           "bgnbd": signal + rng.normal(0, 0.1, n),       # the best reference: level with the model
                           "mlp": signal,                                 # ahead of it by the noise only
                           "lightgbm": 3 * y + rng.normal(0, 1.0, n)})    # far ahead
    metrics = {c: {"roc_auc": within_group_roc_auc(y, scores[c].to_numpy(), scores["cutoff"].to_numpy())}
               for c in ["frequency", "bgnbd", "mlp", "lightgbm"]}
    assert metrics["mlp"]["roc_auc"] > metrics["bgnbd"]["roc_auc"] > metrics["frequency"]["roc_auc"]

    def choose(candidates, references=("frequency", "bgnbd"), **selection):
        cfg = PropensityParams(candidates=candidates, references=list(references), selection=selection)
        return choose_on_validation({c: metrics[c] for c in candidates}, scores, cfg)

    assert PropensityParams(candidates=["frequency"], references=["frequency"]).selection.rule == "beat_reference"
    noise = choose(["frequency", "bgnbd", "mlp"])
    assert noise["best_on_valid"] == "mlp" and noise["best_reference_on_valid"] == "bgnbd"
    assert noise["champion"] == "bgnbd", noise["note"]
    assert 0 < noise["lead_over_reference"] <= noise["se_of_lead"] and "the reference is served" in noise["note"]
    # the same lead counts with a smaller k, and a clear lead counts with the default
    assert choose(["frequency", "bgnbd", "mlp"], k_se=0.01)["champion"] == "mlp"
    clear = choose(["frequency", "bgnbd", "mlp", "lightgbm"])
    assert clear["champion"] == "lightgbm" and clear["lead_over_reference"] > clear["se_of_lead"] > 0
    # a reference that is the best on validation is served as it is; a reference with no score does not count
    assert choose(["frequency", "bgnbd"])["champion"] == "bgnbd"
    # ...and the SE of the best learned candidate's gap to it is kept for the registry gate
    ref_best = choose(["frequency", "bgnbd", "mlp"], references=["frequency", "mlp"])  # mlp a reference here, bgnbd trails it
    assert ref_best["champion"] == ref_best["best_reference_on_valid"] == "mlp" and ref_best["best_learned_on_valid"] == "bgnbd"
    assert ref_best["lead_over_reference"] < 0 < ref_best["se_of_lead"] and "a reference, is the best" in ref_best["note"]
    metrics["frequency"] = {"roc_auc": float("nan")}
    assert choose(["frequency", "mlp"], references=["frequency"])["champion"] == "mlp"
    assert choose(["frequency", "bgnbd", "mlp"], rule="best")["champion"] == "mlp"
