"""Training of the purchase-propensity MLP, its calibration and its baselines (logistic regression, gradient-boosted
trees); models are fit on the train split, calibration on the validation split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from shopsight import paths
from shopsight.config import GBTParams, MLPParams, Params
from shopsight.features import feature_columns, model_input


def _class_weight(labels: np.ndarray, mode: str) -> dict[int, float] | None:
    from shopsight.calibration import class_weights

    return class_weights(labels, mode)


def fit_binary_mlp(
    x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray, cfg: MLPParams, name: str, distribute: str = "none"
):
    """The MLP classifier with class weights, early stopping on validation ROC-AUC; returns (model, history frame).

    `distribute` (training.distribute) picks the tf.distribute strategy the model is built and compiled in; the
    global batch is cfg.batch_size per replica.
    """
    import keras

    from models.mlp import build_mlp_classifier
    from shopsight.orchestration import distribution_strategy

    keras.utils.set_random_seed(cfg.seed)
    strategy = distribution_strategy(distribute)
    with strategy.scope():
        model = build_mlp_classifier(x_train, cfg.hidden_units, cfg.dropout, cfg.learning_rate, name=name)
    stop = keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=cfg.patience, restore_best_weights=True)
    history = model.fit(
        x_train,
        y_train,
        validation_data=(x_valid, y_valid),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size * strategy.num_replicas_in_sync,
        class_weight=_class_weight(y_train, cfg.class_weight),
        callbacks=[stop],
        verbose=2,
    )
    hist = pd.DataFrame(history.history)
    hist.insert(0, "epoch", range(1, len(hist) + 1))
    return model, hist


def save_calibration_and_baseline(model, x_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray, method: str, out_dir: Path) -> None:
    """calibration.json (fit on the validation window) and the integrated-gradients baseline (mean training input)."""
    from shopsight.calibration import fit_calibrator
    from shopsight.explain import BASELINE_FILE

    p_valid = model.predict(x_valid, batch_size=4096, verbose=0).ravel()
    fit_calibrator(p_valid, y_valid, method).to_json(out_dir / "calibration.json")
    np.save(out_dir / BASELINE_FILE, x_train.mean(axis=0).astype("float32"))


def train_propensity(params: Params, dataset_path: Path = paths.PROPENSITY_FEATURES, out_dir: Path = paths.PROPENSITY_DIR) -> dict:
    """Fit the MLP (class-weighted, early stopping on validation AUC), calibrate it on the validation cutoff,
    and fit the baselines (logistic regression, gradient-boosted trees) on the train split; write all under out_dir."""
    cfg = params.propensity.mlp
    columns = feature_columns(params.features.windows_days)
    data = pd.read_parquet(dataset_path)
    train, valid = data[data["split"] == "train"], data[data["split"] == "valid"]
    x_train, y_train = model_input(train, columns), train["label"].to_numpy("float32")
    x_valid, y_valid = model_input(valid, columns), valid["label"].to_numpy("float32")
    if len(np.unique(y_train)) < 2:
        raise ValueError(f"{dataset_path}: the training split has a single class; use more data or a longer horizon")

    model, hist = fit_binary_mlp(x_train, y_train, x_valid, y_valid, cfg, name="propensity_mlp", distribute=params.training.distribute)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / "model.keras")
    (out_dir / "feature_columns.json").write_text(json.dumps(columns))
    save_calibration_and_baseline(model, x_train, x_valid, y_valid, params.propensity.calibration.method, out_dir)
    paths.PROPENSITY_PLOTS.mkdir(parents=True, exist_ok=True)
    hist.to_csv(paths.PROPENSITY_PLOTS / "history.csv", index=False)

    baseline = fit_logistic_baseline(x_train, y_train, params)
    (out_dir / "baseline_logistic.json").write_text(json.dumps(baseline))
    # The trees are an evaluation baseline only (never served): keep their held-out scores, not a pickle.
    held_out = data[data["split"].isin(["valid", "test"])]
    gbt = fit_gbt_baseline(x_train, y_train, params.propensity.gbt)
    scores = held_out[["cutoff", "user_id", "split"]].copy()
    scores["gradient_boosting"] = gbt.predict_proba(model_input(held_out, columns))[:, 1]
    scores.to_parquet(out_dir / "baseline_scores.parquet", index=False)
    return {"epochs": len(hist), "train_rows": len(train), "valid_rows": len(valid), "gbt_iterations": int(gbt.n_iter_)}


def fit_gbt_baseline(x: np.ndarray, y: np.ndarray, cfg: GBTParams):
    """sklearn HistGradientBoostingClassifier on the training rows (class-weighted like the MLP)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    clf = HistGradientBoostingClassifier(
        max_iter=cfg.max_iter,
        learning_rate=cfg.learning_rate,
        max_leaf_nodes=cfg.max_leaf_nodes,
        min_samples_leaf=cfg.min_samples_leaf,
        l2_regularization=cfg.l2_regularization,
        class_weight="balanced" if cfg.class_weight == "balanced" else None,
        early_stopping=False,
        random_state=cfg.seed,
    )
    return clf.fit(x, y)


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
