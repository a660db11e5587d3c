"""The Keras demand forecaster as a candidate (family "keras"; names "cnn" and "lstm" pick the architecture of
models/forecast.py): one global model over sliding windows of every item and category series, with the
day-of-week of every input and target day as inputs (window_inputs).

Training windows start every `demand.window_step_days` days and end before the validation window; item series
with fewer than `demand.min_train_units` units before it are left out of training (they are still forecast).
Early stopping looks at the validation window. The epoch time is reported by `fit` (epoch_s): a stride of
7 days instead of 1 cuts it about 7-fold on thousands of series, the windows overlapping less. Online Retail II
(3,965 item series trained, 174,460 windows, stride 7): 21.5 s per epoch on a shared 2-core box (load 6-9),
against 93-132 s at stride 1 (issue 15). There it did not earn its place: test item WAPE 1.190 against 0.918
for the per-series choice (bench/realdata_demand.py); an MAE loss collapses to the all-zero forecast.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from shopsight.candidates import Candidate, register
from shopsight.demand import DemandSeries, DemandWindow, window_inputs


class _EpochTimer:
    """A Keras callback recording wall-clock seconds per epoch (built lazily: keras imports here only)."""

    @staticmethod
    def make():
        import keras

        class Timer(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.seconds = []

            def on_epoch_begin(self, epoch, logs=None):
                self._t0 = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.seconds.append(time.perf_counter() - self._t0)

        return Timer()


@register("demand", "cnn")
@register("demand", "lstm")
class KerasForecaster(Candidate):
    kind: ClassVar[str] = "demand"
    family: ClassVar[str] = "keras"

    def __init__(self, name: str, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(name, config)
        self.model = None

    def _inputs(self, history: np.ndarray, start, is_category: np.ndarray, horizon: int):
        w = self.config["input_days"]
        hist = np.asarray(history, dtype="float64")
        if hist.shape[1] < w:  # a short history is left-padded with zero sales
            hist = np.concatenate([np.zeros((hist.shape[0], w - hist.shape[1])), hist], axis=1)
        return window_inputs(hist[:, -w:], start, is_category, horizon)

    def fit(self, train: DemandSeries, valid: DemandWindow) -> dict[str, Any]:
        import keras

        from models.forecast import build_forecaster

        c, m = self.config, self.config["model"]
        w, h = c["input_days"], c["horizon_days"]
        levels = np.asarray(train.levels)
        rows = np.flatnonzero((levels == "category") | (train.units.sum(axis=1) >= c["min_train_units"]))
        origins = list(range(w, len(train.days) - h + 1, c["window_step_days"]))
        if not origins:
            raise ValueError(f"{len(train.days)} training days are too few for demand.input_days={w} and horizon_days={h}")
        hist = np.concatenate([train.units[rows, o - w : o] for o in origins])
        target = np.concatenate([train.units[rows, o : o + h] for o in origins])
        first = np.repeat(train.days[0] + np.asarray(origins) * np.timedelta64(1, "D"), len(rows))
        x_train, s_train = window_inputs(hist, first, np.tile(levels[rows] == "category", len(origins)), h)
        vw = valid.rows(rows)
        x_valid, s_valid = self._inputs(vw.history, vw.start, vw.is_category, h)
        keras.utils.set_random_seed(m["seed"])
        self.model = build_forecaster(w, x_train["window"].shape[2], x_train["context"].shape[1], h, self.name, m["filters"],
                                      m["kernel_size"], m["hidden_units"], m["dropout"], m["learning_rate"], m["loss"], m["residual"])
        stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=m["patience"], restore_best_weights=True)
        timer = _EpochTimer.make()
        history = self.model.fit(x_train, target / s_train[:, None], validation_data=(x_valid, vw.actual / s_valid[:, None]),
                                 epochs=m["epochs"], batch_size=m["batch_size"], callbacks=[stop, timer], verbose=0)
        return {"epochs": len(history.history["loss"]), "train_windows": int(len(target)), "series_trained": int(len(rows)),
                "epoch_s": round(float(np.median(timer.seconds)), 2), "val_loss": [round(float(v), 5) for v in history.history["val_loss"]]}

    def predict(self, data: DemandWindow) -> np.ndarray:
        inputs, scale = self._inputs(data.history, data.start, data.is_category, data.horizon)
        if len(scale) <= 256:  # a service batch: one forward pass, no predict() loop overhead
            out = self.model(inputs, training=False)
        else:
            out = self.model.predict(inputs, batch_size=4096, verbose=0)
        return np.clip(np.asarray(out, dtype="float64") * scale[:, None], 0.0, None)

    def save(self, directory: Path) -> None:
        self.model.save(Path(directory) / "model.keras")

    @classmethod
    def load(cls, directory: Path, name: str, config: Mapping[str, Any]) -> "Candidate":
        import keras

        candidate = cls(name, config)
        candidate.model = keras.models.load_model(Path(directory) / "model.keras")
        return candidate
