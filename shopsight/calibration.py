"""Probability calibration (fit on the validation cutoff) and the metrics that judge probabilities.

A class-weighted network ranks well but its probabilities are inflated; a one-dimensional map fitted on the
validation window (Platt scaling on the logit, or isotonic regression) repairs them without touching the
ranking. Calibrators are stored as plain JSON (no pickles) so the service applies the same map.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

EPS = 1e-7


@dataclass(frozen=True)
class Calibrator:
    """A monotone map from a raw probability to a calibrated one.

    platt: sigmoid(scale * logit(p) + bias); isotonic: piecewise-linear interpolation through (x, y);
    none: identity.
    """

    method: str
    scale: float = 1.0
    bias: float = 0.0
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)

    def apply(self, p: np.ndarray) -> np.ndarray:
        p = np.clip(np.asarray(p, dtype="float64"), EPS, 1 - EPS)
        if self.method == "platt":
            return _sigmoid(self.scale * _logit(p) + self.bias)
        if self.method == "isotonic":
            return np.clip(np.interp(p, self.x, self.y), EPS, 1 - EPS)
        return p

    def to_json(self, path: Path) -> None:
        Path(path).write_text(_dumps(asdict(self)))

    @classmethod
    def from_json(cls, path: Path) -> "Calibrator":
        import json

        return cls(**json.loads(Path(path).read_text()))


def fit_calibrator(p: np.ndarray, y: np.ndarray, method: str) -> Calibrator:
    """Fit `method` (platt | isotonic | none) on held-out probabilities `p` and labels `y`."""
    p = np.clip(np.asarray(p, dtype="float64"), EPS, 1 - EPS)
    y = np.asarray(y, dtype="float64")
    if method == "none":
        return Calibrator("none")
    if len(np.unique(y)) < 2:
        raise ValueError("calibration needs both classes in the validation window; use more users or a longer horizon")
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        # C large: plain maximum likelihood of the two parameters (no shrinkage towards 0).
        lr = LogisticRegression(C=1e6, max_iter=1000).fit(_logit(p)[:, None], y)
        return Calibrator("platt", scale=float(lr.coef_[0, 0]), bias=float(lr.intercept_[0]))
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=EPS, y_max=1 - EPS, out_of_bounds="clip", increasing=True).fit(p, y)
        return Calibrator("isotonic", x=[float(v) for v in iso.X_thresholds_], y=[float(v) for v in iso.y_thresholds_])
    raise ValueError(f"unknown calibration method {method!r}: use platt, isotonic or none")


def reliability_table(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Equal-width bins of predicted probability: count, mean predicted, observed positive rate."""
    y = np.asarray(y, dtype="float64")
    p = np.asarray(p, dtype="float64")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    frame = pd.DataFrame({"bin": idx, "p": p, "y": y})
    agg = frame.groupby("bin").agg(count=("y", "size"), mean_predicted=("p", "mean"), observed_rate=("y", "mean"))
    agg = agg.reindex(range(n_bins))
    agg["count"] = agg["count"].fillna(0).astype("int64")
    agg.insert(0, "bin_center", (edges[:-1] + edges[1:]) / 2)
    return agg.reset_index(drop=True)


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """ECE: the count-weighted mean |observed rate - mean predicted| over equal-width bins."""
    table = reliability_table(y, p, n_bins)
    filled = table[table["count"] > 0]
    return float((filled["count"] * (filled["observed_rate"] - filled["mean_predicted"]).abs()).sum() / max(len(np.asarray(y)), 1))


def lift_at_top(y: np.ndarray, score: np.ndarray, fraction: float = 0.1) -> float:
    """Positive rate among the top `fraction` by score divided by the overall positive rate (ties broken stably)."""
    y = np.asarray(y, dtype="float64")
    base = y.mean()
    if base == 0:
        return float("nan")
    k = max(1, int(round(fraction * len(y))))
    top = np.argsort(-np.asarray(score, dtype="float64"), kind="stable")[:k]
    return float(y[top].mean() / base)


def within_group_roc_auc(y: np.ndarray, p: np.ndarray, groups: np.ndarray | None = None) -> float:
    """ROC-AUC over the (positive, negative) pairs of the same group (cutoff): the per-group AUCs weighted by their
    pairs, positives x negatives. With one group it is the usual ROC-AUC. Rows of several cutoffs pooled into one AUC
    reward a score that tells the cutoffs apart when their label rates differ (a count that grows with the history
    ranks a late cutoff's users apart from an early one's), which says nothing about ranking users at one cutoff."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    p = np.asarray(p, dtype="float64")
    if groups is None:
        return float(roc_auc_score(y, p))
    codes, uniques = pd.factorize(np.asarray(groups))
    if len(uniques) <= 1:
        return float(roc_auc_score(y, p))
    total, weight = 0.0, 0.0
    for g in range(len(uniques)):
        rows = codes == g
        pos = int(y[rows].sum())
        pairs = pos * (int(rows.sum()) - pos)
        if pairs:
            total += pairs * roc_auc_score(y[rows], p[rows])
            weight += pairs
    return total / weight if weight else float("nan")


def classification_metrics(y: np.ndarray, p: np.ndarray, n_bins: int = 10, groups: np.ndarray | None = None) -> dict[str, float]:
    """ROC-AUC, PR-AUC, log loss, Brier score, ECE and lift in the top decile of one set of probabilities.

    With `groups` (each row's cutoff) of more than one value, `roc_auc` is `within_group_roc_auc` and `roc_auc_pooled`
    the AUC of all rows as one set; the other metrics are over all rows."""
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    y = np.asarray(y)
    p = np.clip(np.asarray(p, dtype="float64"), EPS, 1 - EPS)
    out = {
        "roc_auc": within_group_roc_auc(y, p, groups),
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p, n_bins),
        "lift_top_decile": lift_at_top(y, p, 0.1),
    }
    if groups is not None and len(pd.unique(np.asarray(groups))) > 1:
        out["roc_auc_pooled"] = float(roc_auc_score(y, p))
    return out


def class_weights(labels: np.ndarray, mode: str) -> dict[int, float] | None:
    """Inverse-frequency weights (`balanced`) so the rare class counts as much as the common one; None for `none`."""
    if mode == "none":
        return None
    labels = np.asarray(labels)
    pos = max(int(labels.sum()), 1)
    neg = max(len(labels) - pos, 1)
    return {0: len(labels) / (2.0 * neg), 1: len(labels) / (2.0 * pos)}


def render_reliability_png(tables: dict[str, pd.DataFrame], eces: dict[str, float], title: str, path: Path) -> None:
    """Reliability diagram: observed rate against mean predicted probability, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfectly calibrated")
    for name, table in tables.items():
        t = table[table["count"] > 0]
        ax.plot(t["mean_predicted"], t["observed_rate"], marker="o", label=f"{name} (ECE {eces[name]:.3f})")
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _dumps(obj) -> str:
    import json

    return json.dumps(obj, indent=2)
