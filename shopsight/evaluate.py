"""Test-split evaluation of the propensity model against its baselines and the oracle: metrics JSON, DVC plot data, PNGs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shopsight import paths
from shopsight.config import Params
from shopsight.features import model_input
from shopsight.train import predict_logistic_baseline


BASELINES = ("logistic_regression", "gradient_boosting")


def binary_metrics(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> dict[str, float]:
    """ROC-AUC, PR-AUC, log loss, Brier, ECE and lift@top-decile (see shopsight.calibration)."""
    from shopsight.calibration import classification_metrics

    return classification_metrics(y, p, n_bins)


def oracle_scores(truth_file: str, column: str, cutoff: pd.Timestamp, horizon_key: str, horizon_days: int) -> tuple[pd.Series | None, str]:
    """The simulator's true probability per user at `cutoff` (from data/truth), or None and why not.

    The truth must have been generated for the same horizon (`horizon_key` in data/truth/simulation.json).
    """
    path = paths.TRUTH_DIR / truth_file
    if not path.exists():
        return None, f"oracle skipped: {path} not found (the data source has no ground truth)"
    summary = paths.TRUTH_DIR / "simulation.json"
    if summary.exists():
        truth_h = json.loads(summary.read_text()).get("params", {}).get(horizon_key)
        if truth_h is not None and int(truth_h) != int(horizon_days):
            return None, (f"oracle skipped: the truth was generated for {horizon_key}={truth_h}, the task uses {horizon_days}; "
                          "rerun ingest (`dvc repro ingest`) so the simulator's horizon matches")
    truth = pd.read_parquet(path, columns=["cutoff", "user_id", column])
    truth = truth[truth["cutoff"] == pd.Timestamp(cutoff)]
    if truth.empty:
        return None, f"oracle skipped: {path} has no rows at the test cutoff {cutoff}"
    return truth.set_index(truth["user_id"].astype("string"))[column], f"oracle: {path} at {cutoff}"


def compare_with_oracle(test_metrics: dict[str, dict], model: str, baselines: list[str], metric: str = "roc_auc", tolerance: float = 0.03) -> dict:
    """The issue's targets: `model` within `tolerance` of the oracle and above every baseline on `metric`."""
    m = test_metrics[model][metric]
    out: dict = {"metric": metric, "model": model, "model_value": m,
                 "above_every_baseline": bool(all(m > test_metrics[b][metric] for b in baselines if b in test_metrics))}
    if "oracle" in test_metrics:
        out["oracle_value"] = test_metrics["oracle"][metric]
        out["gap_to_oracle"] = test_metrics["oracle"][metric] - m
        out[f"within_{tolerance}_of_oracle"] = bool(out["gap_to_oracle"] <= tolerance)
    return out


def score_binary_task(
    y: np.ndarray, scores: dict[str, np.ndarray], oracle: np.ndarray | None, n_bins: int
) -> tuple[dict[str, dict], dict[str, pd.DataFrame]]:
    """Metrics and reliability tables of every scorer; the oracle is scored on the rows where it is known."""
    from shopsight.calibration import reliability_table

    metrics = {name: binary_metrics(y, p, n_bins) for name, p in scores.items()}
    tables = {name: reliability_table(y, p, n_bins) for name, p in scores.items()}
    if oracle is not None:
        known = ~np.isnan(oracle)
        if known.any() and len(np.unique(y[known])) == 2:
            metrics["oracle"] = binary_metrics(y[known], oracle[known], n_bins) | {"n": int(known.sum())}
            tables["oracle"] = reliability_table(y[known], oracle[known], n_bins)
    return metrics, tables


def write_binary_plots(task_plots: Path, y: np.ndarray, scores: dict[str, np.ndarray], tables: dict[str, pd.DataFrame], metrics: dict, title: str) -> pd.DataFrame:
    """roc.csv (DVC plot), reliability.csv (DVC plot) and reliability.png under `task_plots`; returns the ROC frame."""
    from sklearn.metrics import roc_curve

    from shopsight.calibration import render_reliability_png

    grid = np.linspace(0, 1, 101)
    roc = {"fpr": grid}
    for name, p in scores.items():
        fpr, tpr, _ = roc_curve(y, p)
        roc[f"tpr_{name}"] = np.interp(grid, fpr, tpr)
    task_plots.mkdir(parents=True, exist_ok=True)
    roc_frame = pd.DataFrame(roc).round(5)
    roc_frame.to_csv(task_plots / "roc.csv", index=False)
    first = next(iter(tables.values()))
    wide = pd.DataFrame({"bin_center": first["bin_center"]})
    for name, table in tables.items():
        wide[f"observed_{name}"] = table["observed_rate"].round(5)
        wide[f"predicted_{name}"] = table["mean_predicted"].round(5)
        wide[f"count_{name}"] = table["count"]
    wide.to_csv(task_plots / "reliability.csv", index=False)
    render_reliability_png(tables, {n: metrics[n]["ece"] for n in tables}, title, task_plots / "reliability.png")
    return roc_frame


def write_importance(task_plots: Path, model_dir: Path, model, x: np.ndarray, columns: list[str], cfg, title: str) -> pd.DataFrame:
    """Global integrated-gradients importance over a sample of the rows: importance.csv and importance.png."""
    from shopsight.explain import explain_model_dir, global_importance, render_importance_png

    rng = np.random.default_rng(0)
    sample = x[rng.choice(len(x), size=min(cfg.global_sample, len(x)), replace=False)]
    importance = global_importance(explain_model_dir(model_dir, sample, cfg.ig_steps, model=model), columns)
    importance.round(6).to_csv(task_plots / "importance.csv", index=False)
    render_importance_png(importance, title, task_plots / "importance.png")
    return importance


@dataclass
class TestSplitScores:
    test: pd.DataFrame
    y: np.ndarray
    x: np.ndarray
    scores: dict[str, np.ndarray]  # the MLP raw and calibrated
    model: object
    columns: list[str]


def score_test_split(dataset_path: Path, model_dir: Path) -> TestSplitScores:
    """The test-split rows, labels, model input, model and the MLP's raw and calibrated scores (shared by binary tasks)."""
    import keras

    from shopsight.calibration import Calibrator

    columns = json.loads((model_dir / "feature_columns.json").read_text())
    data = pd.read_parquet(dataset_path)
    test = data[data["split"] == "test"]
    y = test["label"].to_numpy()
    if len(np.unique(y)) < 2:
        raise ValueError(f"{dataset_path}: the test split has a single class; ROC-AUC is undefined. Use more users or a longer horizon")
    x = model_input(test, columns)
    model = keras.models.load_model(model_dir / "model.keras")
    raw = model.predict(x, batch_size=4096, verbose=0).ravel()
    calibrated = Calibrator.from_json(model_dir / "calibration.json").apply(raw)
    return TestSplitScores(test, y, x, {"mlp": raw, "mlp_calibrated": calibrated}, model, columns)


def evaluate_propensity(params: Params, dataset_path: Path = paths.PROPENSITY_FEATURES, model_dir: Path = paths.PROPENSITY_DIR) -> dict:
    """Score the held-out test cutoff with the MLP (raw and calibrated), the baselines and, on the simulator, the
    oracle; write metrics/propensity.json, ROC/reliability/importance plots."""
    split = score_test_split(dataset_path, model_dir)
    test, y, x, model, columns = split.test, split.y, split.x, split.model, split.columns
    scores = {
        **split.scores,
        "logistic_regression": predict_logistic_baseline(json.loads((model_dir / "baseline_logistic.json").read_text()), x),
    }
    baseline_file = model_dir / "baseline_scores.parquet"
    if baseline_file.exists():
        held = pd.read_parquet(baseline_file)
        held = held[held["split"] == "test"].set_index(["cutoff", "user_id"])["gradient_boosting"]
        scores["gradient_boosting"] = held.reindex(pd.MultiIndex.from_frame(test[["cutoff", "user_id"]])).to_numpy()
    cutoff = test["cutoff"].iloc[0]
    truth, note = oracle_scores("truth_purchase.parquet", "p_purchase", cutoff, "horizon_days", params.features.horizon_days)
    oracle = truth.reindex(test["user_id"].astype("string")).to_numpy("float64") if truth is not None else None
    n_bins = params.propensity.calibration.n_bins
    test_metrics, tables = score_binary_task(y, scores, oracle, n_bins)
    metrics = {
        "test": test_metrics,
        "n_test": int(len(y)),
        "test_positive_rate": float(y.mean()),
        "test_cutoff": str(cutoff),
        "main_metric": "roc_auc",
        "calibration_method": params.propensity.calibration.method,
        "oracle_note": note,
        "targets": compare_with_oracle(test_metrics, "mlp", list(BASELINES)),
    }
    paths.PROPENSITY_METRICS.parent.mkdir(parents=True, exist_ok=True)
    paths.PROPENSITY_METRICS.write_text(json.dumps(metrics, indent=2))

    roc = write_binary_plots(paths.PROPENSITY_PLOTS, y, scores, tables, test_metrics, "Purchase propensity: reliability (test)")
    _render_pngs(metrics, roc)
    write_importance(paths.PROPENSITY_PLOTS, model_dir, model, x, columns, params.propensity.explain, "Purchase propensity: what drives the score")
    return metrics


def metric_table_markdown(metrics: dict, keys: list[str]) -> str:
    """The test metric table (model vs baselines vs oracle) as Markdown."""
    lines = ["| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, m in metrics["test"].items():
        lines.append(f"| {name} | " + " | ".join(f"{m[k]:.4f}" if k in m else "-" for k in keys) + " |")
    return "\n".join(lines)


def render_roc_png(roc: pd.DataFrame, test_metrics: dict, path: Path, title: str) -> None:
    """ROC curves of every model in `roc` (fpr + tpr_<model> columns) with their test AUC in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for col in [c for c in roc.columns if c.startswith("tpr_")]:
        name = col.removeprefix("tpr_")
        ax.plot(roc["fpr"], roc[col], label=f"{name} (AUC {test_metrics[name]['roc_auc']:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _render_pngs(metrics: dict, roc: pd.DataFrame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    render_roc_png(roc, metrics["test"], paths.PROPENSITY_PLOTS / "roc.png", "Purchase propensity: test ROC")

    history = paths.PROPENSITY_PLOTS / "history.csv"
    if history.exists():
        hist = pd.read_csv(history)
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        axes[0].plot(hist["epoch"], hist["loss"], label="train")
        axes[0].plot(hist["epoch"], hist["val_loss"], label="validation")
        axes[0].set(xlabel="epoch", ylabel="loss", title="loss")
        axes[1].plot(hist["epoch"], hist["auc"], label="train")
        axes[1].plot(hist["epoch"], hist["val_auc"], label="validation")
        axes[1].set(xlabel="epoch", ylabel="ROC-AUC", title="ROC-AUC")
        for a in axes:
            a.legend()
        fig.tight_layout()
        fig.savefig(paths.PROPENSITY_PLOTS / "history.png", dpi=110)
        plt.close(fig)
