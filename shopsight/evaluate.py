"""Test-split evaluation of the propensity model against its baseline: metrics JSON, DVC plot data, PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from shopsight import paths
from shopsight.config import Params
from shopsight.features import model_input
from shopsight.train import predict_logistic_baseline


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    p = np.clip(p, 1e-7, 1 - 1e-7)
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
    }


def evaluate_propensity(params: Params, dataset_path: Path = paths.PROPENSITY_FEATURES, model_dir: Path = paths.PROPENSITY_DIR) -> dict:
    """Score the held-out test cutoff with the MLP and the baseline; write metrics/propensity.json and plots."""
    import keras
    from sklearn.metrics import roc_curve

    columns = json.loads((model_dir / "feature_columns.json").read_text())
    data = pd.read_parquet(dataset_path)
    test = data[data["split"] == "test"]
    y = test["label"].to_numpy()
    if len(np.unique(y)) < 2:
        raise ValueError(f"{dataset_path}: the test split has a single class; ROC-AUC is undefined. Use more users or a longer horizon")
    x = model_input(test, columns)
    model = keras.models.load_model(model_dir / "model.keras")
    scores = {
        "mlp": model.predict(x, batch_size=4096, verbose=0).ravel(),
        "logistic_regression": predict_logistic_baseline(json.loads((model_dir / "baseline_logistic.json").read_text()), x),
    }
    metrics = {
        "test": {name: binary_metrics(y, p) for name, p in scores.items()},
        "n_test": int(len(y)),
        "test_positive_rate": float(y.mean()),
        "test_cutoff": str(test["cutoff"].iloc[0]),
        "main_metric": "roc_auc",
    }
    paths.PROPENSITY_METRICS.parent.mkdir(parents=True, exist_ok=True)
    paths.PROPENSITY_METRICS.write_text(json.dumps(metrics, indent=2))

    grid = np.linspace(0, 1, 101)
    roc = {"fpr": grid}
    for name, p in scores.items():
        fpr, tpr, _ = roc_curve(y, p)
        roc[f"tpr_{name}"] = np.interp(grid, fpr, tpr)
    paths.PROPENSITY_PLOTS.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(roc).round(5).to_csv(paths.PROPENSITY_PLOTS / "roc.csv", index=False)
    _render_pngs(metrics, pd.DataFrame(roc))
    return metrics


def _render_pngs(metrics: dict, roc: pd.DataFrame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for col in [c for c in roc.columns if c.startswith("tpr_")]:
        name = col.removeprefix("tpr_")
        ax.plot(roc["fpr"], roc[col], label=f"{name} (AUC {metrics['test'][name]['roc_auc']:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="Purchase propensity: test ROC")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(paths.PROPENSITY_PLOTS / "roc.png", dpi=110)
    plt.close(fig)

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
