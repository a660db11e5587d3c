"""Multi-layer perceptron for tabular user features (purchase propensity, churn)."""

from __future__ import annotations

import numpy as np


def build_mlp_classifier(
    train_x: np.ndarray,
    hidden_units: list[int],
    dropout: float,
    learning_rate: float,
    name: str = "mlp",
):
    """A binary classifier: Normalization (adapted on the training rows) -> Dense/ReLU/Dropout blocks -> sigmoid.

    The input is named `features` so the exported serving signature takes `features=`.
    """
    import keras

    inputs = keras.Input(shape=(train_x.shape[1],), name="features", dtype="float32")
    norm = keras.layers.Normalization(name="normalize")
    norm.adapt(train_x)
    x = norm(inputs)
    for i, units in enumerate(hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"dense_{i}")(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="probability")(x)
    model = keras.Model(inputs, outputs, name=name)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc"), keras.metrics.AUC(curve="PR", name="pr_auc")],
    )
    return model
