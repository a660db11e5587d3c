"""Standardised logistic regression as a user-level binary candidate, stored as plain coefficients (JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from shopsight.candidates.base import Candidate, register
from shopsight.candidates.user_rows import UserRows, top_contributions_from

MODEL_FILE = "logistic.json"


@register("user_binary", "logistic_regression")
class LogisticCandidate(Candidate):
    """config: C, max_iter (shopsight.config.LogisticParams)."""

    kind = "user_binary"
    family = "linear"

    def __init__(self, name: str, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(name, config)
        self.coef: dict[str, Any] = {}

    def fit(self, train: UserRows, valid: UserRows) -> dict[str, Any]:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(train.x)
        clf = LogisticRegression(C=float(self.config.get("C", 1.0)), max_iter=int(self.config.get("max_iter", 2000)))
        clf.fit(scaler.transform(train.x), train.y)
        scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
        self.coef = {"mean": scaler.mean_.tolist(), "scale": scale.tolist(), "coef": clf.coef_[0].tolist(), "intercept": float(clf.intercept_[0])}
        return {"iterations": int(clf.n_iter_[0])}

    def _terms(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype="float64") - np.asarray(self.coef["mean"])) / np.asarray(self.coef["scale"])
        return z * np.asarray(self.coef["coef"])

    def predict(self, data: UserRows) -> np.ndarray:
        logits = self._terms(data.x).sum(axis=1) + self.coef["intercept"]
        return 1.0 / (1.0 + np.exp(-logits))

    def explain(self, data: UserRows, top_k: int) -> list[list[dict]]:
        """coefficient x standardised input per feature (log-odds units), top_k per row."""
        return top_contributions_from(self._terms(data.x), data.columns, top_k)

    def attributions(self, data: UserRows) -> np.ndarray:
        return self._terms(data.x)

    def save(self, directory: Path) -> None:
        (Path(directory) / MODEL_FILE).write_text(json.dumps(self.coef))

    @classmethod
    def load(cls, directory: Path, name: str, config: Mapping[str, Any]) -> "LogisticCandidate":
        out = cls(name, config)
        out.coef = json.loads((Path(directory) / MODEL_FILE).read_text())
        return out
