"""Integrated gradients (Sundararajan et al. 2017) for the Keras tabular classifiers (propensity, churn).

The attribution of feature i for input x against a baseline x' is
    (x_i - x'_i) * integral_0^1 d f(x' + a (x - x')) / d x_i da,
approximated with the trapezoid rule over `steps` points. The attributions sum to f(x) - f(x') (completeness),
so a marketer reads them as "this feature moved the score up/down by so much". The baseline is the mean
model input of the training rows, stored with the model as `ig_baseline.npy`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

BASELINE_FILE = "ig_baseline.npy"


def integrated_gradients_fn(model, n_features: int, steps: int):
    """A compiled tf.function (x [n, d] float32, baseline [d] float32) -> attributions [n, d] of the model's
    probability output. Built once per model; one call handles a whole batch."""
    import tensorflow as tf

    alphas = tf.constant(np.linspace(0.0, 1.0, steps + 1), dtype=tf.float32)  # steps + 1 points, trapezoid
    weights = tf.constant(np.r_[0.5, np.ones(steps - 1), 0.5] / steps, dtype=tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, n_features], tf.float32), tf.TensorSpec([n_features], tf.float32)])
    def attribute(x, baseline):
        delta = x - baseline[None, :]
        path = baseline[None, None, :] + alphas[None, :, None] * delta[:, None, :]  # [n, steps+1, d]
        flat = tf.reshape(path, [-1, n_features])
        with tf.GradientTape() as tape:
            tape.watch(flat)
            out = tf.reshape(model(flat, training=False), [-1])
        grads = tf.reshape(tape.gradient(out, flat), [-1, steps + 1, n_features])
        avg = tf.reduce_sum(grads * weights[None, :, None], axis=1)
        return avg * delta

    return attribute


def integrated_gradients(model, x: np.ndarray, baseline: np.ndarray, steps: int = 32, batch_size: int = 512) -> np.ndarray:
    """Attributions [n, d] for rows `x` (model input space) against `baseline` [d], in batches."""
    x = np.asarray(x, dtype="float32")
    fn = integrated_gradients_fn(model, x.shape[1], steps)
    base = np.asarray(baseline, dtype="float32")
    parts = [fn(x[i : i + batch_size], base).numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(parts) if parts else np.zeros_like(x)


def top_contributions(attributions: np.ndarray, columns: list[str], k: int) -> list[list[dict]]:
    """Per row, the k features with the largest |attribution|: [{feature, contribution}] strongest first."""
    attributions = np.asarray(attributions)
    order = np.argsort(-np.abs(attributions), axis=1, kind="stable")[:, :k]
    return [
        [{"feature": columns[j], "contribution": float(attributions[i, j])} for j in order[i]]
        for i in range(len(attributions))
    ]


def format_reasons(contributions: list[dict]) -> str:
    """'purchases_28d (+0.081); recency_days (-0.034)': a line a marketer can read in a spreadsheet."""
    return "; ".join(f"{c['feature']} ({c['contribution']:+.3f})" for c in contributions)


def global_importance(attributions: np.ndarray, columns: list[str]) -> pd.DataFrame:
    """Mean |attribution| and mean signed attribution per feature, most important first."""
    attributions = np.asarray(attributions)
    frame = pd.DataFrame(
        {"feature": columns, "mean_abs_attribution": np.abs(attributions).mean(axis=0), "mean_attribution": attributions.mean(axis=0)}
    )
    return frame.sort_values("mean_abs_attribution", ascending=False, kind="stable").reset_index(drop=True)


def render_importance_png(importance: pd.DataFrame, title: str, path: Path, top: int = 15) -> None:
    """Horizontal bar chart of mean |integrated gradient| per feature."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    head = importance.head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(head) + 1.2))
    colors = ["tab:red" if v > 0 else "tab:blue" for v in head["mean_attribution"]]
    ax.barh(head["feature"], head["mean_abs_attribution"], color=colors)
    ax.set(xlabel="mean |integrated gradient| (probability units)", title=title)
    ax.text(0.99, 0.01, "red: raises the score on average; blue: lowers it", transform=ax.transAxes, ha="right", va="bottom", fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


from datetime import datetime  # noqa: E402

from pydantic import BaseModel  # noqa: E402


class FeatureContribution(BaseModel):
    feature: str
    contribution: float


class ExplainedScoreOut(BaseModel):
    """A calibrated probability with the features that moved it most (integrated gradients)."""

    user_id: str
    probability: float
    model: str
    as_of: datetime
    recent_activity: bool
    reasons: list[FeatureContribution]


def explain_requests(scorer, users: list, feature_params, tag: str, top_k: int) -> list[ExplainedScoreOut]:
    """Score and explain request histories (shopsight.serving.UserHistory) with the shared feature code; `scorer` is
    a shopsight.tasks.user_binary.ChampionScorer (any family)."""
    from shopsight.serving import features_for_histories

    if not users:
        return []
    x, active, as_ofs = features_for_histories(users, feature_params)
    probs, reasons = scorer.predict(x), scorer.explain(x, top_k)
    return [
        ExplainedScoreOut(user_id=u.user_id, probability=float(p), model=tag, as_of=t, recent_activity=a,
                          reasons=[FeatureContribution(**c) for c in r])
        for u, p, a, t, r in zip(users, probs, active, as_ofs, reasons)
    ]
