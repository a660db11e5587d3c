"""A user-level task end to end on a dataset built in code: every candidate fitted, the champion chosen on
validation (not test), calibration checked, every candidate reported on test, the champion served as trained."""

from __future__ import annotations

import dataclasses
import json
import math
import uuid

import numpy as np
import pandas as pd
import pytest

from shopsight.config import Params
from shopsight.features import feature_columns
from shopsight.tasks.user_binary import ChampionScorer, UserTask, checked_calibration, evaluate_user_task, train_user_task

WINDOWS = [7, 28]


def _dataset(path, signal_column: str = "recency_days", flip_test: bool = False, seed: int = 0,
             splits: tuple[str, ...] = ("train", "train", "valid", "test"), start: str = "2026-01-01") -> None:
    """train (2 cutoffs), valid, test rows; the label follows `signal_column` (fewer days, more buying). With
    `flip_test` the test label follows purchase_days_total instead: a candidate can then win test and lose validation."""
    rng = np.random.default_rng(seed)
    columns = feature_columns(WINDOWS)
    frames = []
    for k, split in enumerate(splits):
        n = 900
        frame = pd.DataFrame(rng.gamma(1.5, 3.0, size=(n, len(columns))), columns=columns)
        frame["purchase_days_total"] = rng.poisson(3, n) + 1.0
        signal = -np.log1p(frame[signal_column]) if not (flip_test and split == "test") else np.log1p(frame["purchase_days_total"]) * 3
        frame["label"] = (rng.random(n) < 1 / (1 + np.exp(-(signal - signal.mean()) * 2))).astype("int64")
        frame.insert(0, "user_id", pd.array([f"u{i}" for i in range(n)], dtype="string"))
        frame.insert(0, "cutoff", pd.Timestamp(start, tz="UTC") + pd.Timedelta(days=7 * k))
        frame["split"] = split
        frames.append(frame)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.concat(frames, ignore_index=True).to_parquet(path, index=False)


def _task(tmp_path) -> UserTask:
    return UserTask(name="propensity", dataset=tmp_path / "data" / "features.parquet", model_dir=tmp_path / "artifacts" / "propensity",
                    metrics=tmp_path / "metrics" / "propensity.json", plots=tmp_path / "plots" / "propensity",
                    section=lambda p: p.propensity, horizon=lambda p: 7, truth=("none.parquet", "p", "horizon_days"),
                    label="buys within the horizon", bgnbd={"events": "purchase", "score": "buy"})


def _params(candidates: list[str], references: list[str], rule: str = "one_se") -> Params:
    return Params.model_validate({
        "features": {"windows_days": WINDOWS},
        "propensity": {"candidates": candidates, "references": references, "selection": {"rule": rule},
                       "blend": ["logistic_regression", "lightgbm", "mlp"] if "blend" in candidates else [],
                       "rules": {"recency": {"column": "recency_days", "sign": -1}, "frequency": {"column": "purchase_days_total", "sign": 1}},
                       "lightgbm": {"num_boost_round": 60, "early_stopping_rounds": 10},
                       "mlp": {"hidden_units": [8], "epochs": 2, "batch_size": 256},
                       "explain": {"ig_steps": 4, "global_sample": 200}},
    })


def test_every_candidate_is_fitted_and_reported_and_the_champion_is_served_as_trained(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/truth here: the oracle is skipped
    task = _task(tmp_path)
    _dataset(task.dataset)
    params = _params(["frequency", "recency", "logistic_regression", "lightgbm", "mlp", "blend"], ["frequency", "recency"])
    summary = train_user_task(task, params)
    metrics = evaluate_user_task(task, params)

    raw = task.metrics.read_text()
    assert "NaN" not in raw and "Infinity" not in raw
    stored = json.loads(raw)
    names = {"frequency", "recency", "logistic_regression", "lightgbm", "mlp", "blend"}
    assert names <= set(stored["valid"]) and names <= set(stored["test"])
    best_valid = max(names, key=lambda n: stored["valid"][n]["roc_auc"])
    # one-SE rule: the first candidate (simplest first) within one paired-bootstrap SE of the best on validation
    rule = stored["selection"]
    assert rule["rule"] == "one_se" and rule["best_on_valid"] == best_valid and stored["selected_on"] == "valid"
    assert stored["champion"] == summary["champion"] == rule["champion"]
    order = ["frequency", "recency", "logistic_regression", "lightgbm", "mlp", "blend"]
    se = rule["se_of_gap_to_best"]
    gap = {n: stored["valid"][best_valid]["roc_auc"] - stored["valid"][n]["roc_auc"] for n in order}
    assert gap[stored["champion"]] <= se[stored["champion"]] + 1e-9
    assert all(gap[n] > se[n] for n in order[: order.index(stored["champion"])]), "an earlier candidate was within one SE"
    assert stored["targets"]["best_reference"] in {"frequency", "recency"} - {stored["champion"]}
    assert stored["deep_model"]["name"] == "mlp"
    # the champion directory holds one candidate; the others are kept apart
    assert json.loads((task.model_dir / "candidate.json").read_text())["name"] == stored["champion"]
    assert sorted(p.name for p in task.candidates_dir.iterdir() if p.is_dir()) == sorted(names)
    for plot in ("roc.png", "reliability.png", "importance.png", "history.png", "roc.csv"):
        assert (task.plots / plot).exists(), plot

    # what the service computes from the stored champion equals what was evaluated
    scorer = ChampionScorer(task.model_dir)
    data = pd.read_parquet(task.dataset)
    test = data[data["split"] == "test"]
    from shopsight.features import model_input

    served = scorer.predict(model_input(test, scorer.columns))
    scores = pd.read_parquet(task.candidates_dir / "scores.parquet")
    from shopsight.calibration import Calibrator

    evaluated = Calibrator.from_json(task.model_dir / "calibration.json").apply(scores.loc[scores["split"] == "test", stored["champion"]].to_numpy())
    np.testing.assert_allclose(served, evaluated, rtol=1e-5, atol=1e-6)
    assert metrics["test"][f"{stored['champion']}_calibrated"]["roc_auc"] == pytest.approx(metrics["test"][stored["champion"]]["roc_auc"], abs=1e-9)
    reasons = scorer.explain(model_input(test.head(3), scorer.columns), 2)
    assert len(reasons) == 3 and all(len(r) <= 2 for r in reasons)


def test_several_test_cutoffs_are_pooled_and_the_oracle_is_matched_per_cutoff(tmp_path, monkeypatch):
    """features.n_test_cutoffs: the test report pools every test cutoff's rows; the simulator's truth is matched by
    (cutoff, user), not by user alone (the same users appear at every cutoff with other labels)."""
    monkeypatch.chdir(tmp_path)
    task = _task(tmp_path)
    _dataset(task.dataset, splits=("train", "train", "valid", "test", "test"))
    data = pd.read_parquet(task.dataset)
    test = data[data["split"] == "test"]
    truth = test[["cutoff", "user_id"]].assign(p=test["label"].to_numpy() * 0.8 + 0.1)  # the oracle knows each row's label
    (tmp_path / "data" / "truth").mkdir(parents=True)
    truth.sample(frac=1.0, random_state=0).to_parquet(tmp_path / "data" / "truth" / "none.parquet", index=False)
    params = _params(["frequency", "recency"], ["frequency"], rule="best")
    train_user_task(task, params)
    metrics = evaluate_user_task(task, params)
    assert metrics["n_test"] == len(test) == 1800
    assert metrics["test_cutoffs"] == [str(c) for c in sorted(test["cutoff"].unique())] and len(metrics["test_cutoffs"]) == 2
    assert metrics["test"]["oracle"]["roc_auc"] == pytest.approx(1.0)
    from sklearn.metrics import roc_auc_score

    score = -np.log1p(test["recency_days"])
    within = sum(roc_auc_score(t["label"], score[t.index]) * t["label"].sum() * (1 - t["label"]).sum() for _, t in test.groupby("cutoff"))
    within /= sum(t["label"].sum() * (1 - t["label"]).sum() for _, t in test.groupby("cutoff"))
    assert metrics["test"]["recency"]["roc_auc"] == pytest.approx(within, abs=1e-9)  # pairs within a cutoff
    assert metrics["test"]["recency"]["roc_auc_pooled"] == pytest.approx(roc_auc_score(test["label"], score), abs=1e-9)


def test_early_stopping_looks_at_held_out_training_users_never_at_validation(tmp_path, monkeypatch):
    """selection.early_stopping: train_users hands LightGBM (and the MLP) a share of the training users to stop on:
    every row it sees comes from train, the held-out users are whole users, and the validation rows that choose the
    champion are none of them; `valid` restores stopping on validation."""
    from shopsight.candidates.gbdt import LightGBMCandidate

    seen = []
    original = LightGBMCandidate.fit

    def spy(self, fit_rows, stop_rows):
        seen.append((fit_rows, stop_rows))
        return original(self, fit_rows, stop_rows)

    monkeypatch.setattr(LightGBMCandidate, "fit", spy)
    monkeypatch.chdir(tmp_path)
    task = _task(tmp_path)
    _dataset(task.dataset)
    data = pd.read_parquet(task.dataset)
    train = data[data["split"] == "train"]
    params = _params(["frequency", "lightgbm"], ["frequency"], rule="best")
    train_user_task(task, params)
    fit_rows, stop_rows = seen[0]
    assert len(fit_rows) + len(stop_rows) == len(train) and 0.1 < len(stop_rows) / len(train) < 0.3
    assert set(np.unique(stop_rows.cutoff)) <= set(train["cutoff"].astype("int64"))
    held = {tuple(r) for r in stop_rows.x.round(5)}
    assert not held & {tuple(r) for r in fit_rows.x.round(5)}
    selection = json.loads((task.candidates_dir / "selection.json").read_text())
    assert selection["early_stopping"]["on"] == "train_users" and selection["early_stopping"]["rows"] == len(stop_rows)
    # whole users: a held-out user's rows at both training cutoffs are held out together
    assert selection["early_stopping"]["users"] * 2 == len(stop_rows)

    seen.clear()
    on_valid = params.model_copy(deep=True)
    on_valid.propensity.selection.early_stopping = "valid"
    train_user_task(task, on_valid)
    fit_rows, stop_rows = seen[0]
    assert len(fit_rows) == len(train) and len(stop_rows) == int((data["split"] == "valid").sum())


def test_the_champion_is_chosen_on_validation_even_when_another_candidate_wins_test(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    task = _task(tmp_path)
    _dataset(task.dataset, flip_test=True, seed=1)
    params = _params(["frequency", "recency"], ["frequency"], rule="best")
    train_user_task(task, params)
    metrics = evaluate_user_task(task, params)
    assert metrics["champion"] == "recency", "recency wins validation"
    assert metrics["selection"] == {"rule": "best", "best_on_valid": "recency", "champion": "recency"}
    assert metrics["test"]["frequency"]["roc_auc"] > metrics["test"]["recency"]["roc_auc"], "frequency wins test"
    assert metrics["targets"]["met"] is False and metrics["targets"]["note"].startswith("not met")


def test_refit_on_train_and_valid_serves_the_latest_labels_with_the_rounds_validation_chose(tmp_path, monkeypatch):
    """The label follows recency on the training cutoffs and frequency from validation on (a shift): a candidate
    refitted on train + validation learns the new signal, one fitted on train only cannot; the choice, and the
    validation scores it rests on, are the same either way."""
    import lightgbm as lgb

    from shopsight.candidates.gbdt import MODEL_FILE

    monkeypatch.chdir(tmp_path)
    task = _task(tmp_path)
    _dataset(task.dataset, seed=2)
    data = pd.read_parquet(task.dataset)
    rng = np.random.default_rng(3)
    late = data["split"].isin(["valid", "test"]).to_numpy()
    signal = np.log1p(data.loc[late, "purchase_days_total"].to_numpy()) * 3
    data.loc[late, "label"] = (rng.random(late.sum()) < 1 / (1 + np.exp(-(signal - signal.mean()) * 2))).astype("int64")
    data.to_parquet(task.dataset, index=False)

    runs = {}
    for refit in (False, True):
        params = _params(["recency", "logistic_regression", "lightgbm"], ["recency"], rule="best")
        params.propensity.selection.refit = refit
        train_user_task(task, params)
        runs[refit] = (evaluate_user_task(task, params), pd.read_parquet(task.candidates_dir / "scores.parquet"),
                       json.loads((task.candidates_dir / "selection.json").read_text()))
    (before, scores_before, _), (after, scores_after, selection) = runs[False], runs[True]
    valid = scores_after["split"] == "valid"
    pd.testing.assert_frame_equal(scores_before[valid], scores_after[valid])
    assert after["champion"] == before["champion"]
    for name in ("logistic_regression", "lightgbm"):
        assert after["test"][name]["roc_auc"] > before["test"][name]["roc_auc"] + 0.05, name
    assert after["test"]["recency"]["roc_auc"] == before["test"]["recency"]["roc_auc"], "a rule has nothing to refit"
    info = selection["candidates"]["lightgbm"]
    n_train, n_valid = (int((data["split"] == s).sum()) for s in ("train", "valid"))
    assert info["refit"]["rows"] == n_train + n_valid and info["refit"]["rounds"] == info["best_iteration"]
    booster = lgb.Booster(model_file=str(task.candidates_dir / "lightgbm" / MODEL_FILE))
    assert booster.num_trees() == info["best_iteration"]


def test_a_retrain_that_serves_a_reference_is_let_past_a_learned_champion_by_the_noise_its_rule_allowed(tmp_path, monkeypatch):
    """End to end through train, evaluate and register: a learned champion is registered; a later run serves the
    reference under beat_reference (k_se so large that no lead counts), and the gate, which on the plain
    comparison would keep the learned champion, lets the reference in by k_se x the run's SE of the lead."""
    from shopsight import registry
    from shopsight.tasks.user_binary import register_user_task

    monkeypatch.chdir(tmp_path)
    task = dataclasses.replace(_task(tmp_path), name=f"ref{uuid.uuid4().hex[:8]}")  # a registry task of its own
    params = _params(["recency", "logistic_regression"], ["recency"], rule="best")
    params.registry.gate.max_regression = None

    def run(seed: int):
        _dataset(task.dataset, signal_column="purchase_days_total", seed=seed)  # recency is a weak reference here
        train_user_task(task, params)
        metrics = evaluate_user_task(task, params)
        return metrics, register_user_task(task, params)

    first, first_reg = run(seed=1)
    assert first["champion"] == "logistic_regression" and first_reg.promoted
    learned_score = first["valid"]["logistic_regression"]["roc_auc"]

    params.propensity.selection.rule, params.propensity.selection.k_se = "beat_reference", 50.0
    later, later_reg = run(seed=2)
    rule = later["selection"]
    assert later["champion"] == "recency" and rule["best_on_valid"] == "logistic_regression" and rule["se_of_lead"] > 0
    assert later["valid"]["recency"]["roc_auc"] < learned_score - 0.02, "the plain gate would keep the learned champion"
    assert 50.0 * rule["se_of_lead"] > learned_score - later["valid"]["recency"]["roc_auc"]
    assert later_reg.promoted and registry.champion_tag(task.name) == later_reg.tag, later_reg.reason
    assert "the challenger is the reference recency" in later_reg.decision.basis
    lineage = {row["tag"]: row["lineage"] for row in registry.list_models(task.name)}
    assert lineage[later_reg.tag]["is_reference"] is True and lineage[first_reg.tag]["is_reference"] is False


def test_the_gate_scores_the_champion_on_the_challengers_validation_rows(tmp_path, monkeypatch):
    """Run 1's label follows recency: its champion scores high on its own validation rows. Weeks later the label follows
    frequency. The challenger, fitted on the new rows, beats the old champion on them; compared with the champion's
    stored score it would have been turned away. The gate re-scores the champion on the challenger's validation rows
    (it was fitted on no label from them), keeps the stored scores for the same rows, and for rows the champion was
    fitted on, and says which it used."""
    from shopsight import registry
    from shopsight.evaluate import binary_metrics
    from shopsight.tasks.user_binary import register_user_task, user_rows

    monkeypatch.chdir(tmp_path)
    task = dataclasses.replace(_task(tmp_path), name=f"gate{uuid.uuid4().hex[:8]}")  # a registry task of its own
    params = _params(["frequency", "recency", "logistic_regression"], ["frequency", "recency"], rule="best")
    params.registry.gate.min_improvement, params.registry.gate.max_regression = 0.01, None

    def run(**dataset):
        _dataset(task.dataset, **dataset)
        train_user_task(task, params)
        metrics = evaluate_user_task(task, params)
        return metrics, register_user_task(task, params)

    first, first_reg = run(seed=4)
    assert first_reg.promoted and first["gate_rows"]["labels_until"] == "2026-01-22T00:00:00+00:00"  # valid 01-15 + 7 days
    stored = first["valid"][first["champion"]]["roc_auc"]

    later, later_reg = run(seed=5, signal_column="purchase_days_total", start="2026-03-01")
    champion_valid = registry.champion_entry(task.name)
    valid = pd.read_parquet(task.dataset).query("split == 'valid'")
    scorer = ChampionScorer(registry.model_path(first_reg.tag))
    rescored = binary_metrics(valid["label"].to_numpy(), scorer.model.predict(user_rows(valid, scorer.columns, 7)), 10,
                              groups=valid["cutoff"].to_numpy("datetime64[ns]").astype("int64"))["roc_auc"]
    challenger = later["valid"][later["champion"]]["roc_auc"]
    assert challenger < stored - 0.01, "against the stored score the challenger would be rejected"
    assert challenger > rescored + 0.01
    assert later_reg.promoted and champion_valid[0] == later_reg.tag
    main = next(r for r in later_reg.decision.rows if r.metric == "roc_auc")
    assert main.champion == pytest.approx(rescored) and later_reg.decision.basis.startswith("re-scored on the challenger's validation rows")
    assert "re-scored" in later_reg.reason and registry.list_models(task.name)[0]["gate_basis"] == later_reg.decision.basis

    params.propensity.candidates = ["frequency", "recency"]  # another model on the same rows: stored scores compare
    _, same_reg = run(seed=5, signal_column="purchase_days_total", start="2026-03-01")
    assert same_reg.decision.basis == "stored validation scores, from the same validation rows as the challenger's"

    params.propensity.candidates = ["frequency", "recency", "logistic_regression"]
    _, early_reg = run(seed=6, start="2026-02-20")  # validation at 03-06, before the champion's labels end (03-15 + 7)
    assert early_reg.decision.basis.startswith("stored validation scores from the champion's own run: it was fitted on data up to 2026-03-22")
    main = next(r for r in early_reg.decision.rows if r.metric == "roc_auc")
    assert main.champion == pytest.approx(challenger)


def test_calibration_is_kept_only_where_it_lowers_held_out_ece():
    rng = np.random.default_rng(0)
    users = pd.Series([f"u{i}" for i in range(6000)])
    p_true = rng.uniform(0.05, 0.6, len(users))
    y = (rng.random(len(users)) < p_true).astype(int)
    inflated = np.clip(p_true * 1.6, 0, 0.99)  # a class-weighted network's inflated probabilities
    cal, info = checked_calibration(inflated, y, users, "platt", 10)
    assert cal.method == "platt" and info["held_out_ece_calibrated"] < info["held_out_ece_raw"]
    # already calibrated, few users: an isotonic step function fitted on one half adds noise on the other
    rng = np.random.default_rng(3)
    few = pd.Series([f"u{i}" for i in range(200)])
    p_few = rng.uniform(0.05, 0.6, len(few))
    y_few = (rng.random(len(few)) < p_few).astype(int)
    cal, info = checked_calibration(p_few, y_few, few, "isotonic", 10)
    assert cal.method == "none" and "raw scores kept" in info["reason"]
    assert math.isfinite(info["held_out_ece_raw"]) and info["held_out_ece_calibrated"] >= info["held_out_ece_raw"]
