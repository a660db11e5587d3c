"""Ranking rules as user-level binary candidates: one feature, one direction (e.g. "more purchase days, more
likely to buy"; "longer since the last event, more likely to churn"). Nothing is fitted: the score is
sigmoid(sign * log1p(feature)), a monotone map that the task's calibration (Platt on validation) turns into a
probability. These are the simple references a learnt model has to beat on the same rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from shopsight.candidates.base import Candidate, register
from shopsight.candidates.user_rows import UserRows


@register("user_binary", "rule")
class RankRule(Candidate):
    """config: column (a feature name), sign (+1: a larger value scores higher; -1: lower)."""

    kind = "user_binary"
    family = "rule"

    def _column(self, data: UserRows) -> int:
        column = self.config["column"]
        if column not in data.columns:
            raise KeyError(f"rule {self.name}: feature {column!r} is not among the model's columns")
        return data.columns.index(column)

    def fit(self, train: UserRows, valid: UserRows) -> dict[str, Any]:
        self._column(train)
        return {"column": self.config["column"], "sign": int(self.config.get("sign", 1))}

    def predict(self, data: UserRows) -> np.ndarray:
        z = float(self.config.get("sign", 1)) * data.x[:, self._column(data)].astype("float64")
        return 1.0 / (1.0 + np.exp(-z))

    def explain(self, data: UserRows, top_k: int) -> list[list[dict]]:
        """The rule's one feature (its log1p value, signed by the rule's direction)."""
        j, sign = self._column(data), float(self.config.get("sign", 1))
        return [[{"feature": self.config["column"], "contribution": float(sign * v)}] for v in data.x[:, j]]

    def save(self, directory: Path) -> None:
        pass  # the rule is its config (candidate.json)

    @classmethod
    def load(cls, directory: Path, name: str, config: Mapping[str, Any]) -> "RankRule":
        return cls(name, config)
