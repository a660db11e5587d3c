"""Training entry points of the user-level tasks: the shared Keras MLP fit (used by the `mlp` candidate,
shopsight/candidates/keras_mlp.py) and `train_propensity`, which fits every propensity candidate and chooses the
champion on validation (shopsight/tasks/user_binary.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from shopsight.config import MLPParams, Params


def _class_weight(labels: np.ndarray, mode: str) -> dict[int, float] | None:
    from shopsight.calibration import class_weights

    return class_weights(labels, mode)


def fit_binary_mlp(
    x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray | None, y_valid: np.ndarray | None, cfg: MLPParams, name: str,
    distribute: str = "none",
):
    """The MLP classifier with class weights, early stopping on validation ROC-AUC; returns (model, history frame).
    Without validation data (a refit on train + validation) it trains exactly cfg.epochs epochs.

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
    held_out = x_valid is not None
    stop = keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=cfg.patience, restore_best_weights=True)
    history = model.fit(
        x_train,
        y_train,
        validation_data=(x_valid, y_valid) if held_out else None,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size * strategy.num_replicas_in_sync,
        class_weight=_class_weight(y_train, cfg.class_weight),
        callbacks=[stop] if held_out else [],
        verbose=2,
    )
    hist = pd.DataFrame(history.history)
    hist.insert(0, "epoch", range(1, len(hist) + 1))
    return model, hist


def train_propensity(params: Params) -> dict:
    """Fit every propensity candidate (params.yaml propensity.candidates) on the train cutoffs, choose the champion on
    validation, calibrate it where calibration transfers; see shopsight.tasks.user_binary.train_user_task."""
    from shopsight.tasks import PROPENSITY
    from shopsight.tasks.user_binary import train_user_task

    return train_user_task(PROPENSITY, params)
