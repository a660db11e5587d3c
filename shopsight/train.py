"""Training of the purchase-propensity MLP and its logistic-regression baseline (train split only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from shopsight import paths
from shopsight.config import Params
from shopsight.features import feature_columns, model_input


def _class_weight(labels: np.ndarray, mode: str) -> dict[int, float] | None:
    if mode == "none":
        return None
    pos = max(int(labels.sum()), 1)
    neg = max(len(labels) - pos, 1)
    return {0: len(labels) / (2.0 * neg), 1: len(labels) / (2.0 * pos)}


def train_propensity(params: Params, dataset_path: Path = paths.PROPENSITY_FEATURES, out_dir: Path = paths.PROPENSITY_DIR) -> dict:
    """Fit the MLP (early stopping on validation AUC) and the logistic baseline; write both under out_dir."""
    import keras

    from models.mlp import build_mlp_classifier

    cfg = params.propensity.mlp
    columns = feature_columns(params.features.windows_days)
    data = pd.read_parquet(dataset_path)
    train, valid = data[data["split"] == "train"], data[data["split"] == "valid"]
    x_train, y_train = model_input(train, columns), train["label"].to_numpy("float32")
    x_valid, y_valid = model_input(valid, columns), valid["label"].to_numpy("float32")
    if len(np.unique(y_train)) < 2:
        raise ValueError(f"{dataset_path}: the training split has a single class; use more data or a longer horizon")

    keras.utils.set_random_seed(cfg.seed)
    model = build_mlp_classifier(x_train, cfg.hidden_units, cfg.dropout, cfg.learning_rate, name="propensity_mlp")
    stop = keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=cfg.patience, restore_best_weights=True)
    history = model.fit(
        x_train,
        y_train,
        validation_data=(x_valid, y_valid),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        class_weight=_class_weight(y_train, cfg.class_weight),
        callbacks=[stop],
        verbose=2,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / "model.keras")
    (out_dir / "feature_columns.json").write_text(json.dumps(columns))
    hist = pd.DataFrame(history.history)
    hist.insert(0, "epoch", range(1, len(hist) + 1))
    paths.PROPENSITY_PLOTS.mkdir(parents=True, exist_ok=True)
    hist.to_csv(paths.PROPENSITY_PLOTS / "history.csv", index=False)

    baseline = fit_logistic_baseline(x_train, y_train, params)
    (out_dir / "baseline_logistic.json").write_text(json.dumps(baseline))
    return {"epochs": len(hist), "train_rows": len(train), "valid_rows": len(valid)}


def fit_logistic_baseline(x: np.ndarray, y: np.ndarray, params: Params) -> dict:
    """Standardised logistic regression; stored as plain coefficients (JSON, no pickle)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=params.propensity.baseline.C, max_iter=params.propensity.baseline.max_iter, class_weight="balanced")
    clf.fit(scaler.transform(x), y)
    return {
        "mean": scaler.mean_.tolist(),
        "scale": scaler.scale_.tolist(),
        "coef": clf.coef_[0].tolist(),
        "intercept": float(clf.intercept_[0]),
    }


def predict_logistic_baseline(baseline: dict, x: np.ndarray) -> np.ndarray:
    z = (x - np.asarray(baseline["mean"])) / np.asarray(baseline["scale"])
    logits = z @ np.asarray(baseline["coef"]) + baseline["intercept"]
    return 1.0 / (1.0 + np.exp(-logits))
