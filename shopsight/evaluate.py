"""Test-split evaluation shared by the user-level tasks: metrics of probabilities, the simulator's oracle, ROC and
reliability plots; `evaluate_propensity` reports every propensity candidate (shopsight/tasks/user_binary.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from shopsight import paths
from shopsight.config import Params


def strict_json(obj):
    """`obj` with every NaN or infinity as null and numpy scalars as Python numbers: metrics files are strict JSON."""
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def binary_metrics(y: np.ndarray, p: np.ndarray, n_bins: int = 10, groups: np.ndarray | None = None) -> dict[str, float]:
    """ROC-AUC, PR-AUC, log loss, Brier, ECE and lift@top-decile (see shopsight.calibration); with `groups` (the rows'
    cutoffs) ROC-AUC counts the pairs within a cutoff only."""
    from shopsight.calibration import classification_metrics

    return classification_metrics(y, p, n_bins, groups)


def oracle_scores(truth_file: str, column: str, cutoffs: list[pd.Timestamp], horizon_key: str, horizon_days: int) -> tuple[pd.Series | None, str]:
    """The simulator's true probability per (cutoff, user_id) at the test `cutoffs` (from data/truth), or None and why not.

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
    cutoffs = [pd.Timestamp(c) for c in cutoffs]
    truth = pd.read_parquet(path, columns=["cutoff", "user_id", column])
    truth = truth[truth["cutoff"].isin(cutoffs)]
    missing = sorted(set(cutoffs) - set(truth["cutoff"]))
    if missing:
        return None, f"oracle skipped: {path} has no rows at the test cutoff(s) {', '.join(map(str, missing))}"
    index = pd.MultiIndex.from_arrays([truth["cutoff"], truth["user_id"].astype("string")], names=["cutoff", "user_id"])
    where = ", ".join(map(str, cutoffs))
    return pd.Series(truth[column].to_numpy(), index=index, name=column), f"oracle: {path} at {where}"


def score_binary_task(
    y: np.ndarray, scores: dict[str, np.ndarray], oracle: np.ndarray | None, n_bins: int, groups: np.ndarray | None = None
) -> tuple[dict[str, dict], dict[str, pd.DataFrame]]:
    """Metrics and reliability tables of every scorer (`groups`: the rows' cutoffs, see binary_metrics); the oracle is
    scored on the rows where it is known."""
    from shopsight.calibration import reliability_table

    metrics = {name: binary_metrics(y, p, n_bins, groups) for name, p in scores.items()}
    tables = {name: reliability_table(y, p, n_bins) for name, p in scores.items()}
    if oracle is not None:
        known = ~np.isnan(oracle)
        if known.any() and len(np.unique(y[known])) == 2:
            known_groups = None if groups is None else np.asarray(groups)[known]
            metrics["oracle"] = binary_metrics(y[known], oracle[known], n_bins, known_groups) | {"n": int(known.sum())}
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


def evaluate_propensity(params: Params) -> dict:
    """Test metrics of every propensity candidate and of the served champion, the target against the strongest
    reference, the oracle on the simulator; metrics/propensity.json and plots/propensity/."""
    from shopsight.tasks import PROPENSITY
    from shopsight.tasks.user_binary import evaluate_user_task

    return evaluate_user_task(PROPENSITY, params)


def metric_table_markdown(metrics: dict, keys: list[str]) -> str:
    """The test metric table (model vs baselines vs oracle) as Markdown."""
    lines = ["| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, m in metrics["test"].items():
        lines.append(f"| {name} | " + " | ".join(f"{m[k]:.4f}" if k in m else "-" for k in keys) + " |")
    return "\n".join(lines)


def render_roc_png(roc: pd.DataFrame, test_metrics: dict, path: Path, title: str) -> None:
    """ROC curves of every model in `roc` (fpr + tpr_<model> columns, over all test rows) with their test AUC in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for col in [c for c in roc.columns if c.startswith("tpr_")]:
        name = col.removeprefix("tpr_")
        m = test_metrics[name]
        # the curve is drawn over all rows: with several test cutoffs its area is the pooled AUC, the task's
        # roc_auc counts pairs within a cutoff, so the legend gives both
        auc = (f"AUC {m['roc_auc_pooled']:.3f} pooled, {m['roc_auc']:.3f} within cutoffs" if "roc_auc_pooled" in m
               else f"AUC {m['roc_auc']:.3f}")
        ax.plot(roc["fpr"], roc[col], label=f"{name} ({auc})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
