"""Direct multi-horizon demand forecasters over sliding windows: a dilated causal 1-D CNN or an LSTM.

Inputs (built by shopsight.demand.window_inputs, shared by training, evaluation and the service):
  `window`   [n, input_days, 1 + 7]  scaled daily units and the day-of-week one-hot of each input day;
  `context`  [n, horizon * 7 + 2]    the day-of-week one-hot of every target day, log1p(series scale) and a
                                      level flag (1 = category series, 0 = item series).
Output: [n, horizon] non-negative scaled units (multiplied back by the series scale).
"""

from __future__ import annotations


def build_forecaster(
    input_days: int,
    n_window_features: int,
    n_context: int,
    horizon: int,
    architecture: str,
    filters: int,
    kernel_size: int,
    hidden_units: int,
    dropout: float,
    learning_rate: float,
    loss: str = "poisson",
):
    """A compiled Keras model. The default Poisson loss targets the mean: with intermittent item sales the
    MAE-optimal forecast is often zero everywhere, which WAPE punishes across the pooled series."""
    import keras

    window = keras.Input(shape=(input_days, n_window_features), name="window", dtype="float32")
    context = keras.Input(shape=(n_context,), name="context", dtype="float32")
    if architecture == "cnn":
        x = keras.layers.Conv1D(filters, kernel_size, padding="causal", activation="relu", name="conv_1")(window)
        x = keras.layers.Conv1D(filters, kernel_size, padding="causal", dilation_rate=2, activation="relu", name="conv_2")(x)
        x = keras.layers.Flatten(name="flatten")(x)
    elif architecture == "lstm":
        x = keras.layers.LSTM(filters, name="lstm")(window)
    else:
        raise ValueError(f"unknown demand architecture {architecture!r}: use cnn or lstm")
    x = keras.layers.Concatenate(name="with_context")([x, context])
    x = keras.layers.Dense(hidden_units, activation="relu", name="dense")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    out = keras.layers.Dense(horizon, activation="softplus", name="units")(x)
    model = keras.Model([window, context], out, name=f"demand_{architecture}")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
    return model
