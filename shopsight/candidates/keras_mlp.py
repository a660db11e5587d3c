"""The Keras MLP as a user-level binary candidate: class-weighted, early stopping on the ROC-AUC of the rows `fit`
gets as `valid` (held-out training users by default: selection.early_stopping),
served through a compiled call (never `model.predict` per request), explained by integrated gradients."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from shopsight.candidates.base import Candidate, register
from shopsight.candidates.user_rows import UserRows, top_contributions_from

MODEL_FILE = "model.keras"
CHUNK = 65_536


@register("user_binary", "mlp")
class MLPCandidate(Candidate):
    """config: the task's `mlp` params (shopsight.config.MLPParams) plus distribute, ig_steps."""

    kind = "user_binary"
    family = "keras"
    early_stopping = True

    def __init__(self, name: str, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(name, config)
        self.model = None
        self.history = None
        self.baseline: np.ndarray | None = None
        self._forward = self._attribute = None

    def fit(self, train: UserRows, valid: UserRows) -> dict[str, Any]:
        from shopsight.config import MLPParams
        from shopsight.train import fit_binary_mlp

        cfg = MLPParams(**{k: v for k, v in self.config.items() if k in MLPParams.model_fields})
        self.model, self.history = fit_binary_mlp(train.x, train.y.astype("float32"), valid.x, valid.y.astype("float32"), cfg,
                                                  name=f"{self.name}_mlp", distribute=self.config.get("distribute", "none"))
        self.baseline = train.x.mean(axis=0).astype("float32")  # the integrated-gradients reference input
        return {"epochs": int(len(self.history))}

    def refit(self, rows: UserRows) -> dict[str, Any]:
        """A new network trained on `rows` (train and validation) for the epochs early stopping chose; the held-out
        curve of the first fit stays the reported history."""
        from shopsight.config import MLPParams
        from shopsight.train import fit_binary_mlp

        cfg = MLPParams(**{k: v for k, v in self.config.items() if k in MLPParams.model_fields})
        epochs = int(np.nanargmax(self.history["val_auc"].to_numpy())) + 1 if "val_auc" in self.history else len(self.history)
        cfg = cfg.model_copy(update={"epochs": max(epochs, 1)})
        self.model, _ = fit_binary_mlp(rows.x, rows.y.astype("float32"), None, None, cfg, name=f"{self.name}_mlp",
                                       distribute=self.config.get("distribute", "none"))
        self.baseline = rows.x.mean(axis=0).astype("float32")
        self._forward = self._attribute = None
        return {"epochs": cfg.epochs}

    def _compiled(self):
        if self._forward is None:
            import tensorflow as tf

            model = self.model
            spec = tf.TensorSpec(shape=(None, model.input_shape[-1]), dtype=tf.float32)
            self._forward = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        return self._forward

    def predict(self, data: UserRows) -> np.ndarray:
        if len(data) == 0:
            return np.zeros(0)
        forward = self._compiled()
        return np.concatenate([forward(data.x[i : i + CHUNK]).numpy().ravel() for i in range(0, len(data), CHUNK)]).astype("float64")

    def explain(self, data: UserRows, top_k: int) -> list[list[dict]]:
        """Integrated gradients (probability units of the raw score), top_k per row."""
        if len(data) == 0:
            return []
        if self._attribute is None:
            from shopsight.explain import integrated_gradients_fn

            self._attribute = integrated_gradients_fn(self.model, data.x.shape[1], int(self.config.get("ig_steps", 32)))
        values = self._attribute(data.x, self.baseline).numpy()
        return top_contributions_from(values, data.columns, top_k)

    def attributions(self, data: UserRows) -> np.ndarray:
        from shopsight.explain import integrated_gradients

        return integrated_gradients(self.model, data.x, self.baseline, int(self.config.get("ig_steps", 32)))

    def save(self, directory: Path) -> None:
        from shopsight.explain import BASELINE_FILE

        self.model.save(Path(directory) / MODEL_FILE)
        np.save(Path(directory) / BASELINE_FILE, self.baseline)

    @classmethod
    def load(cls, directory: Path, name: str, config: Mapping[str, Any]) -> "MLPCandidate":
        import keras

        from shopsight.explain import BASELINE_FILE

        out = cls(name, config)
        out.model = keras.models.load_model(Path(directory) / MODEL_FILE)
        out.baseline = np.load(Path(directory) / BASELINE_FILE).astype("float32")
        return out
