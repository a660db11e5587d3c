"""A user-level binary task (propensity, churn) as one shape: its dataset, every candidate of any family fitted on
the training cutoffs, the champion chosen on the validation cutoff, its calibration checked on held-out halves of
validation, one test report of every candidate, and the champion registered and served whatever its family.

Artifacts: `artifacts/<task>/` holds the champion only (candidate.json and its files, calibration.json,
feature_columns.json, task.json): the directory the registry copies and the service loads.
`artifacts/<task>-candidates/` holds every candidate's validation and test scores (scores.parquet) and its saved
files, for the evaluate stage and for inspection.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from shopsight import paths
from shopsight.candidates import get_model, load_candidate, paired_bootstrap_se, reference_unless_beaten, save_candidate, select_champion
from shopsight.candidates.user_rows import UserRows
from shopsight.config import Params, UserTaskParams
from shopsight.evaluate import binary_metrics, strict_json

SCORES_FILE = "scores.parquet"
SELECTION_FILE = "selection.json"
TASK_FILE = "task.json"
RANK_METRICS = ("roc_auc", "pr_auc", "lift_top_decile")


@dataclass(frozen=True)
class UserTask:
    """Where a user-level binary task's data, model, metrics and plots live, and what its label means."""

    name: str
    dataset: Path
    model_dir: Path
    metrics: Path
    plots: Path
    section: Callable[[Params], UserTaskParams]
    horizon: Callable[[Params], int]
    truth: tuple[str, str, str]  # (file under data/truth, probability column, horizon key in simulation.json)
    label: str
    bgnbd: dict[str, str]  # what BG/NBD counts and scores for this task

    @property
    def candidates_dir(self) -> Path:
        return self.model_dir.parent / f"{self.model_dir.name}-candidates"


def candidate_config(task: UserTask, params: Params, name: str) -> tuple[str, dict[str, Any]]:
    """(registry name, config) of a candidate named in params.yaml."""
    cfg = task.section(params)
    if name in cfg.rules:
        return "rule", cfg.rules[name].model_dump()
    if name == "mlp":
        return "mlp", {**cfg.mlp.model_dump(), "distribute": params.training.distribute, "ig_steps": cfg.explain.ig_steps}
    if name == "lightgbm":
        return "lightgbm", dict(cfg.lightgbm)
    if name == "logistic_regression":
        return "logistic_regression", cfg.logistic.model_dump()
    if name in ("bgnbd", "paretonbd"):
        return name, {**getattr(cfg, name).model_dump(), **task.bgnbd}
    if name == "blend":
        return "blend", {"members": list(cfg.blend)}
    if name in cfg.stacked:
        base, base_config = candidate_config(task, params, cfg.stacked[name].base)
        return "stacked", {"base": base, "base_config": base_config, "inputs": list(cfg.stacked[name].inputs)}
    raise ValueError(f"{task.name}.candidates: unknown candidate {name!r}")


def user_rows(frame: pd.DataFrame, columns: list[str], default_horizon: int, with_labels: bool = True) -> UserRows:
    """UserRows of dataset rows (the model input is shopsight.features.model_input of the feature columns)."""
    from shopsight.features import model_input

    horizon = frame["horizon_days"].to_numpy("float64") if "horizon_days" in frame else np.full(len(frame), float(default_horizon))
    cutoff = frame["cutoff"].to_numpy("datetime64[ns]").astype("int64") if "cutoff" in frame else None
    y = frame["label"].to_numpy("int64") if with_labels else None
    return UserRows(model_input(frame, columns), columns, horizon, y, cutoff)


def _split(data: pd.DataFrame, name: str, dataset: Path) -> pd.DataFrame:
    part = data[data["split"] == name]
    if part.empty or part["label"].nunique() < 2:
        raise ValueError(f"{dataset}: the {name} split has {'no rows' if part.empty else 'a single class'}; "
                         "use more data, a longer horizon or other features.* cutoffs in params.yaml")
    return part


def checked_calibration(p_valid: np.ndarray, y_valid: np.ndarray, user_ids: pd.Series, method: str, n_bins: int) -> tuple[Any, dict]:
    """Fit `method` on validation only if it transfers: fitted on one half of the validation users (by a hash of
    the id) it must lower the ECE on the other half, both ways round, on average. Otherwise keep the raw score."""
    from shopsight.calibration import Calibrator, expected_calibration_error, fit_calibrator

    if method == "none":
        return Calibrator("none"), {"method": "none", "reason": "calibration.method is none"}
    half = (pd.util.hash_pandas_object(user_ids.astype("string"), index=False).to_numpy() % 2).astype(bool)
    raw_ece, cal_ece = [], []
    for fit_on in (half, ~half):
        held = ~fit_on
        if len(np.unique(y_valid[fit_on])) < 2 or held.sum() == 0:
            continue
        cal = fit_calibrator(p_valid[fit_on], y_valid[fit_on], method)
        raw_ece.append(expected_calibration_error(y_valid[held], p_valid[held], n_bins))
        cal_ece.append(expected_calibration_error(y_valid[held], cal.apply(p_valid[held]), n_bins))
    check = {"held_out_ece_raw": float(np.mean(raw_ece)) if raw_ece else None,
             "held_out_ece_calibrated": float(np.mean(cal_ece)) if cal_ece else None}
    if cal_ece and np.mean(cal_ece) < np.mean(raw_ece):
        return fit_calibrator(p_valid, y_valid, method), {"method": method, "reason": "lowers ECE on held-out validation halves", **check}
    return Calibrator("none"), {"method": "none", "reason": f"{method} did not lower ECE on held-out validation halves: raw scores kept", **check}


def train_user_task(task: UserTask, params: Params) -> dict[str, Any]:
    """Fit every candidate on the train split, score validation and test, choose the champion on validation,
    calibrate it where calibration transfers, and save the champion (artifacts/<task>) and every candidate's
    scores (artifacts/<task>-candidates)."""
    from tqdm import tqdm

    from shopsight.features import feature_columns

    cfg = task.section(params)
    columns = feature_columns(params.features.windows_days)
    data = pd.read_parquet(task.dataset)
    train, valid, test = (_split(data, s, task.dataset) for s in ("train", "valid", "test"))
    horizon = task.horizon(params)
    rows = {s: user_rows(f, columns, horizon) for s, f in (("train", train), ("valid", valid), ("test", test))}
    n_bins = cfg.calibration.n_bins

    out_cand = task.candidates_dir
    out_cand.mkdir(parents=True, exist_ok=True)
    scores = pd.concat([valid[["cutoff", "user_id", "split", "label"]], test[["cutoff", "user_id", "split", "label"]]], ignore_index=True)
    fitted, info, valid_metrics = {}, {}, {}
    stopping = early_stopping_rows(train, rows["train"], rows["valid"], cfg.selection)
    for name in tqdm(cfg.candidates, desc=f"{task.name}: candidates", unit="model"):
        family_name, config = candidate_config(task, params, name)
        model = get_model("user_binary", family_name, config)
        model.name = name
        if family_name == "blend":  # the blend combines candidates fitted above
            model.members = {m: fitted[m] for m in config["members"] if m in fitted}
        if family_name == "stacked":  # and a stacked candidate takes their scores as inputs
            model.inputs = {m: fitted[m] for m in config["inputs"] if m in fitted}
        t0 = time.perf_counter()
        fit_info = model.fit(*stopping["rows"]) if model.early_stopping else model.fit(rows["train"], rows["valid"])
        p_valid, p_test = model.predict(rows["valid"]), model.predict(rows["test"])
        info[name] = {"family": type(model).family, "fit_seconds": round(time.perf_counter() - t0, 2), **fit_info}
        scores[name] = np.concatenate([p_valid, p_test])
        valid_metrics[name] = binary_metrics(rows["valid"].y, p_valid, n_bins, groups=rows["valid"].cutoff)
        if not cfg.selection.refit:  # otherwise saved once, refitted (refit_on_train_and_valid)
            save_candidate(model, out_cand / name)
        fitted[name] = model
        print(f"{task.name}: {name} ({info[name]['family']}) validation ROC-AUC {valid_metrics[name]['roc_auc']:.4f} "
              f"in {info[name]['fit_seconds']:.1f}s", flush=True)

    rule = choose_on_validation(valid_metrics, scores[scores["split"] == "valid"], cfg)
    champion_name = rule["champion"]
    champion = fitted[champion_name]
    p_valid = scores.loc[scores["split"] == "valid", champion_name].to_numpy()
    calibrator, calibration = checked_calibration(p_valid, rows["valid"].y, valid["user_id"], cfg.calibration.method, n_bins)
    if cfg.selection.refit:
        refit_on_train_and_valid(task, fitted, info, scores, UserRows.concat([rows["train"], rows["valid"]]), rows["test"])

    if task.model_dir.exists():  # the champion directory holds exactly one candidate
        import shutil

        shutil.rmtree(task.model_dir)
    save_candidate(champion, task.model_dir)
    calibrator.to_json(task.model_dir / "calibration.json")
    (task.model_dir / "feature_columns.json").write_text(json.dumps(columns))
    # The served probability refers to the validation label window (what the calibration was fitted on): with
    # features.split=calibration_holdout that is train_horizon_days, shorter than the test horizon.
    served_horizon = float(rows["valid"].horizon_days[0])
    (task.model_dir / TASK_FILE).write_text(json.dumps({
        "task": task.name, "horizon_days": served_horizon, "test_horizon_days": horizon, "champion": champion_name,
        "family": type(champion).family, "label": task.label, "calibration": calibration}, indent=2))
    scores.to_parquet(out_cand / SCORES_FILE, index=False)
    fitted_on = pd.concat([train, valid]) if cfg.selection.refit else train
    selection = {"task": task.name, "selected_on": "valid", "metric": "roc_auc", "champion": champion_name,
                 "gate_rows": gate_rows(valid, fitted_on, horizon),
                 "champion_family": type(champion).family, "rule": rule, "candidates": info, "valid": valid_metrics, "calibration": calibration,
                 "rows": {s: int(len(r)) for s, r in rows.items()}, "early_stopping": stopping["info"]}
    (out_cand / SELECTION_FILE).write_text(json.dumps(strict_json(selection), indent=2))
    _write_history(task, fitted.get("mlp"))
    return {"champion": champion_name, "family": type(champion).family, "calibration": calibration["method"],
            "valid_roc_auc": {n: round(m["roc_auc"], 4) for n, m in valid_metrics.items()}, "rows": selection["rows"]}


def _label_ends(frame: pd.DataFrame, default_horizon: int) -> pd.Series:
    horizon = frame["horizon_days"] if "horizon_days" in frame else pd.Series(float(default_horizon), index=frame.index)
    return pd.to_datetime(frame["cutoff"], utc=True) + pd.to_timedelta(horizon.astype("float64"), unit="D")


def gate_rows(valid: pd.DataFrame, fitted_on: pd.DataFrame, default_horizon: int) -> dict[str, str]:
    """What the registry gate needs to compare this run's champion with a later challenger's on the same rows: a
    fingerprint of the validation rows (cutoff, user, label), the first validation cutoff, and the end of the latest
    label window the served model was fitted on (a later run's validation rows from that instant on are unseen by it)."""
    import hashlib

    keys = valid[["cutoff", "user_id", "label"]].astype({"user_id": "string"}).sort_values(["cutoff", "user_id"])
    digest = hashlib.sha256(pd.util.hash_pandas_object(keys, index=False).to_numpy().tobytes()).hexdigest()[:16]
    return {"valid_fingerprint": digest, "valid_first_cutoff": pd.Timestamp(valid["cutoff"].min()).isoformat(),
            "labels_until": _label_ends(fitted_on, default_horizon).max().isoformat()}


def early_stopping_rows(train: pd.DataFrame, train_rows: UserRows, valid_rows: UserRows, selection) -> dict[str, Any]:
    """(fit rows, stop rows) for the candidates that stop early, and what was done. selection.early_stopping
    train_users: the training rows of a share of the users (a stable hash of user_id, all their cutoffs) are held out
    to stop on, so no candidate looks at the validation rows that choose the champion (a candidate stopped on them
    scores ~0.02-0.03 ROC-AUC higher there than it does on users it never saw, measured on the Taobao head); valid:
    the validation rows, as before. Falls back to valid when the held-out users, or the rest, have a single class."""
    if selection.early_stopping == "valid":
        return {"rows": (train_rows, valid_rows), "info": {"on": "valid", "rows": int(len(valid_rows))}}
    bucket = pd.util.hash_pandas_object(train["user_id"].astype("string"), index=False).to_numpy() % 10_000
    held = bucket < selection.early_stopping_share * 10_000
    stop, fit = train_rows.take(held), train_rows.take(~held)
    if len(np.unique(stop.y)) < 2 or len(np.unique(fit.y)) < 2:
        return {"rows": (train_rows, valid_rows), "info": {"on": "valid", "rows": int(len(valid_rows)), "note": (
            f"the {int(held.sum())} training rows of the held-out users (selection.early_stopping_share="
            f"{selection.early_stopping_share}) or the rest have one class: stopped on validation instead")}}
    return {"rows": (fit, stop), "info": {"on": "train_users", "share": selection.early_stopping_share,
                                          "rows": int(held.sum()), "users": int(train.loc[held, "user_id"].nunique())}}


def refit_on_train_and_valid(task: UserTask, fitted: dict[str, Any], info: dict[str, dict], scores: pd.DataFrame,
                             both: UserRows, test: UserRows) -> None:
    """Fit every candidate again on train + validation (`Candidate.refit`: the rounds/epochs validation chose, in
    candidate order, so a blend combines refitted members), then rescore test and save it: every candidate is
    reported on test as it would be served, with labels up to the test cutoff. The choice and the calibration stay
    those made on validation by the first fits (validation scores are not rewritten: they would be in-sample)."""
    from tqdm import tqdm

    is_test = (scores["split"] == "test").to_numpy()
    for name, model in tqdm(fitted.items(), desc=f"{task.name}: refit on train + valid", unit="model"):
        t0 = time.perf_counter()
        what = model.refit(both)
        info[name]["refit"] = {"rows": int(len(both)), "seconds": round(time.perf_counter() - t0, 2), **what}
        scores.loc[is_test, name] = model.predict(test)
        save_candidate(model, task.candidates_dir / name)


def choose_on_validation(valid_metrics: dict[str, dict[str, float]], valid_scores: pd.DataFrame, cfg) -> dict[str, Any]:
    """The champion under `selection.rule` (SelectionParams): beat_reference, best or one_se, with the paired
    bootstrap over validation users (ROC-AUC within cutoffs) for the standard errors. Returns the champion and what
    the choice rested on."""
    from shopsight.calibration import within_group_roc_auc

    sel = cfg.selection
    best = select_champion(valid_metrics, "roc_auc", order=cfg.candidates)
    out: dict[str, Any] = {"rule": sel.rule, "best_on_valid": best, "champion": best}
    if sel.rule == "best":
        return out
    auc = {n: float(m.get("roc_auc", math.nan)) for n, m in valid_metrics.items()}
    y = valid_scores["label"].to_numpy()

    def se_of_gaps(names: list[str], anchor: str = best) -> dict[str, float]:  # SE of metric(anchor) - metric(each)
        return paired_bootstrap_se(y, {n: valid_scores[n].to_numpy("float64") for n in names}, anchor, within_group_roc_auc, sel.n_boot,
                                   sel.seed, groups=valid_scores["cutoff"].to_numpy(), clusters=valid_scores["user_id"].astype("string").to_numpy())

    if sel.rule == "beat_reference":
        scored = [n for n in cfg.candidates if n in valid_scores and math.isfinite(auc.get(n, math.nan))]
        refs = [n for n in scored if n in cfg.references]
        learned = [n for n in scored if n not in cfg.references]
        if not refs or not learned:
            out["note"] = f"{best} is the best on validation" + ("" if refs else " (no reference to compare with)")
            return out
        ref = select_champion({r: valid_metrics[r] for r in refs}, "roc_auc", order=cfg.candidates)
        top = select_champion({n: valid_metrics[n] for n in learned}, "roc_auc", order=cfg.candidates)
        out.update(best_learned_on_valid=top, n_boot=sel.n_boot)
        out.update(reference_unless_beaten(best, top, ref, auc[top] - auc[ref], se_of_gaps([top, ref], top)[ref], sel.k_se, "on validation"))
        return out
    names = [n for n in cfg.candidates if n in valid_scores]
    se = se_of_gaps(names)
    champion = select_champion(valid_metrics, "roc_auc", order=cfg.candidates, tolerance={n: sel.k_se * v for n, v in se.items()})
    out.update(champion=champion, k_se=sel.k_se, n_boot=sel.n_boot,
               se_of_gap_to_best={n: (round(v, 5) if math.isfinite(v) else None) for n, v in se.items()},
               note=(f"{best} is the best on validation" if champion == best else
                     f"{champion} trails {best} on validation by {valid_metrics[best]['roc_auc'] - valid_metrics[champion]['roc_auc']:.4f}, "
                     f"within {sel.k_se:g} SE ({se[champion]:.4f}): the simpler candidate is kept"))
    return out


def _write_history(task: UserTask, mlp) -> None:
    """plots/<task>/history.csv: the MLP's training curve (a header only when no MLP was trained)."""
    task.plots.mkdir(parents=True, exist_ok=True)
    hist = getattr(mlp, "history", None)
    if hist is None:
        hist = pd.DataFrame(columns=["epoch", "auc", "loss", "val_auc", "val_loss"])
    hist.to_csv(task.plots / "history.csv", index=False)


def evaluate_user_task(task: UserTask, params: Params) -> dict[str, Any]:
    """Test metrics of every candidate (the scores saved at training) and of the served, calibrated champion, the
    oracle on the simulator, the target against the strongest reference, and the plots."""
    from shopsight.calibration import Calibrator
    from shopsight.candidates import champion_vs_references
    from shopsight.evaluate import oracle_scores, render_roc_png, score_binary_task, write_binary_plots

    cfg = task.section(params)
    selection = json.loads((task.candidates_dir / SELECTION_FILE).read_text())
    scores = pd.read_parquet(task.candidates_dir / SCORES_FILE)
    test = scores[scores["split"] == "test"]
    y = test["label"].to_numpy()
    champion = selection["champion"]
    calibrator = Calibrator.from_json(task.model_dir / "calibration.json")
    test_scores = {name: test[name].to_numpy("float64") for name in cfg.candidates if name in test}
    served = f"{champion}_calibrated"
    test_scores[served] = calibrator.apply(test_scores[champion])
    cutoffs = sorted(test["cutoff"].unique())
    file, column, key = task.truth
    truth, note = oracle_scores(file, column, cutoffs, key, task.horizon(params))
    rows = pd.MultiIndex.from_arrays([test["cutoff"], test["user_id"].astype("string")])
    oracle = truth.reindex(rows).to_numpy("float64") if truth is not None else None
    test_metrics, tables = score_binary_task(y, test_scores, oracle, cfg.calibration.n_bins, groups=test["cutoff"].to_numpy())
    references = [r for r in cfg.references if r in test_metrics]
    targets = champion_vs_references(test_metrics, champion, references, "roc_auc", margin=cfg.target_margin)
    if "oracle" in test_metrics:
        targets["oracle_value"] = test_metrics["oracle"]["roc_auc"]
        targets["gap_to_oracle"] = test_metrics["oracle"]["roc_auc"] - test_metrics[champion]["roc_auc"]
    deep = [n for n, i in selection["candidates"].items() if i["family"] == "keras"]
    best_deep = max(deep, key=lambda n: selection["valid"][n]["roc_auc"]) if deep else None
    metrics = {
        "main_metric": "roc_auc",
        "lower_is_better": False,
        "champion": champion,
        "champion_family": selection["champion_family"],
        "selected_on": "valid",
        "selection": selection.get("rule"),
        "model_key": champion,
        "served": served,
        "valid": selection["valid"],
        "test": test_metrics,
        "references": references,
        "targets": targets,
        "deep_model": ({"name": best_deep, "won": best_deep == champion,
                        "note": (f"{best_deep} is the champion" if best_deep == champion else
                                 f"{best_deep} lost on validation to {champion} ({selection['champion_family']}): the platform serves {champion}")}
                       if best_deep else None),
        "calibration": selection["calibration"],
        "candidates": selection["candidates"],
        "n_test": int(len(y)),
        "test_positive_rate": float(y.mean()),
        "test_cutoff": str(cutoffs[0]),
        "test_cutoffs": [str(c) for c in cutoffs],  # pooled in every test metric (features.n_test_cutoffs)
        "horizon_days": task.horizon(params),
        "served_horizon_days": json.loads((task.model_dir / TASK_FILE).read_text())["horizon_days"],
        "label": task.label,
        "oracle_note": note,
        "rows": selection["rows"],
        "gate_rows": selection.get("gate_rows"),
    }
    task.metrics.parent.mkdir(parents=True, exist_ok=True)
    task.metrics.write_text(json.dumps(strict_json(metrics), indent=2))
    roc = write_binary_plots(task.plots, y, test_scores, tables, test_metrics, f"{task.name}: reliability (test)")
    render_roc_png(roc, test_metrics, task.plots / "roc.png", f"{task.name}: test ROC (champion {champion})")
    _write_history_png(task, selection.get("early_stopping", {}).get("on"))
    write_champion_importance(task, params)
    return metrics


def _write_history_png(task: UserTask, stopped_on: str | None) -> None:
    """The MLP's loss and ROC-AUC per epoch, on its training rows and the rows it stopped on (`stopped_on`: train_users
    or valid, from the selection file)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = pd.read_csv(task.plots / "history.csv")
    held_out = "held-out training users (early stopping)" if stopped_on == "train_users" else "validation"
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    if len(hist):
        for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], "auc", "ROC-AUC")):
            ax.plot(hist["epoch"], hist[key], label="train")
            ax.plot(hist["epoch"], hist[f"val_{key}"], label=held_out)
            ax.set(xlabel="epoch", ylabel=label, title=f"MLP {label}")
            ax.legend()
    else:
        axes[0].text(0.5, 0.5, "no MLP among the candidates", ha="center")
    fig.tight_layout()
    fig.savefig(task.plots / "history.png", dpi=110)
    plt.close(fig)


def write_champion_importance(task: UserTask, params: Params) -> pd.DataFrame:
    """importance.csv / importance.png: the champion's mean |attribution| per feature over a sample of test rows
    (integrated gradients for the MLP, tree SHAP for LightGBM, coefficient terms for logistic regression; a rule or
    BG/NBD: permutation importance, the ROC-AUC lost when a feature is shuffled)."""
    from shopsight.explain import global_importance, render_importance_png

    cfg = task.section(params)
    data = pd.read_parquet(task.dataset)
    test = data[data["split"] == "test"]
    test = test.sample(n=min(cfg.explain.global_sample, len(test)), random_state=0)
    scorer = ChampionScorer(task.model_dir)
    rows = user_rows(test, scorer.columns, scorer.horizon_days)
    if hasattr(scorer.model, "attributions"):
        importance = global_importance(scorer.model.attributions(rows), scorer.columns)
        unit = "mean |attribution|"
    else:
        importance = _permutation_importance(scorer.model, rows)
        unit = "ROC-AUC lost when shuffled"
    task.plots.mkdir(parents=True, exist_ok=True)
    importance.round(6).to_csv(task.plots / "importance.csv", index=False)
    render_importance_png(importance, f"{task.name}: what drives the champion ({scorer.name}; {unit})", task.plots / "importance.png")
    return importance


def _permutation_importance(model, rows: UserRows) -> pd.DataFrame:
    from shopsight.calibration import within_group_roc_auc

    rng = np.random.default_rng(0)
    base = within_group_roc_auc(rows.y, model.predict(rows), rows.cutoff) if len(np.unique(rows.y)) == 2 else np.nan
    drops = []
    for j in range(rows.x.shape[1]):
        x = rows.x.copy()
        x[:, j] = rng.permutation(x[:, j])
        shuffled = UserRows(x, rows.columns, rows.horizon_days, rows.y, rows.cutoff)
        drops.append(base - within_group_roc_auc(rows.y, model.predict(shuffled), rows.cutoff) if np.isfinite(base) else np.nan)
    frame = pd.DataFrame({"feature": rows.columns, "mean_abs_attribution": np.abs(drops), "mean_attribution": drops})
    return frame.sort_values("mean_abs_attribution", ascending=False, kind="stable").reset_index(drop=True)


def register_user_task(task: UserTask, params: Params):
    """Register the champion with its metrics, lineage and drift reference; the gate compares validation scores."""
    from shopsight.features import feature_columns
    from shopsight.registry import register_model

    gate = params.registry.gate_for(task.name)
    metrics = json.loads(task.metrics.read_text())
    features = pd.read_parquet(task.dataset)
    reference = features.loc[features["split"] == "train", ["cutoff", "user_id", *feature_columns(params.features.windows_days)]]
    return register_model(
        task.name,
        task.model_dir,
        metrics,
        {task.name: task.section(params).model_dump(), "features": params.features.model_dump()},
        main_metric=gate.metric,
        model_key=metrics["champion"],
        gate=gate,
        reference=reference,
        lineage={"reference_features": str(task.dataset), "reference_split": "train", "family": metrics["champion_family"],
                 "candidate": metrics["champion"], "is_reference": metrics["champion"] in task.section(params).references},
        framework=metrics["champion_family"],
        score_champion=lambda: champion_on_these_rows(task, params, metrics, features, gate.metric),
        gate_rows=metrics.get("gate_rows"),
    )


def champion_on_these_rows(task: UserTask, params: Params, metrics: dict[str, Any], features: pd.DataFrame, main_metric: str):
    """The gate's view of the registered champion (shopsight.registry.champion_scores): re-scored on this run's
    validation rows, the raw score of whatever family it is, by the metric the challenger's validation scores used."""
    from shopsight.registry import champion_scores, with_reference_tolerance

    valid = features[features["split"] == "valid"]

    def rescore(model_dir: Path) -> dict[str, float]:
        scorer = ChampionScorer(model_dir)
        missing = [c for c in scorer.columns if c not in valid.columns]
        if missing:
            raise KeyError(f"its features {missing[:3]} are not in this run's dataset")
        rows = user_rows(valid, scorer.columns, task.horizon(params))
        return binary_metrics(rows.y, scorer.model.predict(rows), task.section(params).calibration.n_bins, groups=rows.cutoff)

    # a champion registered before gate_rows were kept: no label it was fitted on reaches past its run's first test cutoff
    scores = champion_scores(task.name, metrics.get("gate_rows"), rescore, main_metric, labels_until_of=lambda stored: stored.get("test_cutoff"))
    return with_reference_tolerance(task.name, scores, metrics.get("selection"), metrics["champion"], task.section(params).references)


class ChampionScorer:
    """A registered (or freshly trained) champion of any family, for the service and batch scoring: calibrated
    probabilities and per-row reasons from model-input rows (shopsight.features.model_input / the service's
    features_for_histories)."""

    def __init__(self, model_dir: Path) -> None:
        from shopsight.calibration import Calibrator

        model_dir = Path(model_dir)
        self.model = load_candidate(model_dir)
        self.name = self.model.name
        self.family = type(self.model).family
        self.columns: list[str] = json.loads((model_dir / "feature_columns.json").read_text())
        meta = json.loads((model_dir / TASK_FILE).read_text())
        self.horizon_days = float(meta["horizon_days"])
        calibration = model_dir / "calibration.json"
        self.calibrator = Calibrator.from_json(calibration) if calibration.exists() else Calibrator("none")
        warm = np.zeros((1, len(self.columns)), dtype="float32")
        self.raw(warm)  # trace compiled calls before traffic

    def _rows(self, x: np.ndarray) -> UserRows:
        return UserRows(np.asarray(x, dtype="float32"), self.columns, np.full(len(x), self.horizon_days))

    def raw(self, x: np.ndarray) -> np.ndarray:
        """The champion's own score (a probability for every family but a rule)."""
        if len(x) == 0:
            return np.zeros(0)
        p = self.model.predict(self._rows(x))
        return self.calibrator.apply(p) if self.family == "rule" else p

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Calibrated probabilities."""
        return self.calibrator.apply(self.model.predict(self._rows(x))) if len(x) else np.zeros(0)

    def scores(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the champion's own score, the calibrated probability) in one model call."""
        if len(x) == 0:
            return np.zeros(0), np.zeros(0)
        own = self.model.predict(self._rows(x))
        calibrated = self.calibrator.apply(own)
        return (calibrated if self.family == "rule" else own), calibrated

    def explain(self, x: np.ndarray, top_k: int) -> list[list[dict]]:
        """Top-k contributions per row in the family's own units; empty lists where the family has none (BG/NBD)."""
        if len(x) == 0:
            return []
        if not hasattr(self.model, "explain"):
            return [[] for _ in range(len(x))]
        return self.model.explain(self._rows(x), top_k)
