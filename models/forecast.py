"""Direct multi-horizon demand forecasters over sliding windows: a dilated causal 1-D CNN or an LSTM.

Inputs (built by shopsight.demand.window_inputs, shared by training, evaluation and the service):
  `window`   [n, input_days, 1 + 7]  scaled daily units and the day-of-week one-hot of each input day;
  `context`  [n, horizon * 7 + 2]    the day-of-week one-hot of every target day, log1p(series scale) and a
                                      level flag (1 = category series, 0 = item series);
  `baseline` [n, 1]                  the input window's mean daily units, scaled (the moving-average forecast
                                      when demand.moving_average_days == demand.input_days).
Output: [n, horizon] non-negative scaled units (multiplied back by the series scale).

With `residual` (the default) the network learns a multiplicative correction of the baseline per horizon day,
initialised at zero, so an untrained model forecasts the moving average and training starts from the baseline
every forecaster must beat. Demo data, seeds 7/1/2 (validation origin; the test origin in brackets): item WAPE
0.821-0.840 against 0.849-0.870 for the plain softplus output [test 0.855-0.890 against 0.881-0.902]; category
WAPE 0.252-0.264 against 0.274-0.292 [test 0.228-0.269 against 0.211-0.257]. The moving average itself scores
0.830 / 0.283 [0.860 / 0.241]: item demand here is close to unpredictable beyond its recent mean.

The architecture is chosen by the candidate's name ("cnn" or "lstm", shopsight/demand_keras.py), one of the
demand families compared on validation (shopsight/demand.py).
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
    residual: bool = True,
):
    """A compiled Keras model. The default Poisson loss targets the mean: with intermittent item sales the
    MAE-optimal forecast is often zero everywhere, which WAPE punishes across the pooled series."""
    import keras

    window = keras.Input(shape=(input_days, n_window_features), name="window", dtype="float32")
    context = keras.Input(shape=(n_context,), name="context", dtype="float32")
    baseline = keras.Input(shape=(1,), name="baseline", dtype="float32")
    if architecture == "cnn":
        x = keras.layers.Conv1D(filters, kernel_size, padding="causal", activation="relu", name="conv_1")(window)
        x = keras.layers.Conv1D(filters, kernel_size, padding="causal", dilation_rate=2, activation="relu", name="conv_2")(x)
        x = keras.layers.Flatten(name="flatten")(x)
    elif architecture == "lstm":
        x = keras.layers.LSTM(filters, name="lstm")(window)
    else:
        raise ValueError(f"unknown demand architecture {architecture!r}: use cnn or lstm")
    x = keras.layers.Concatenate(name="with_context")([x, context] if residual else [x, context, baseline])
    x = keras.layers.Dense(hidden_units, activation="relu", name="dense")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    if residual:
        correction = keras.layers.Dense(horizon, activation="exponential", kernel_initializer="zeros", name="correction")(x)
        out = keras.layers.Multiply(name="units")([correction, baseline])
    else:
        out = keras.layers.Dense(horizon, activation="softplus", name="units")(x)
    model = keras.Model({"window": window, "context": context, "baseline": baseline}, out, name=f"demand_{architecture}")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
    return model
