"""The data every user-level binary candidate (propensity, churn) takes: one row per (user, cutoff)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class UserRows:
    """Model input rows of a user-level task.

    x: float32 model input (log1p of the non-negative user features, in `columns` order: shopsight.features.model_input);
    y: labels (None when scoring); horizon_days: the label window per row (the calibration/holdout protocol gives
    training rows a shorter one than test rows); cutoff: the cutoff per row as int64 nanoseconds (None when scoring).
    """

    x: np.ndarray
    columns: list[str]
    horizon_days: np.ndarray
    y: np.ndarray | None = None
    cutoff: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.x = np.asarray(self.x, dtype="float32")
        self.horizon_days = np.broadcast_to(np.asarray(self.horizon_days, dtype="float64"), (len(self.x),))

    def __len__(self) -> int:
        return len(self.x)

    def raw(self, column: str) -> np.ndarray:
        """A feature's own value (the inverse of the model input's log1p), float64."""
        try:
            j = self.columns.index(column)
        except ValueError:
            raise KeyError(f"feature {column!r} is not among the model's columns; it needs the lifetime features "
                           "(shopsight/lifetime.py) or a different candidate list in params.yaml") from None
        return np.expm1(self.x[:, j].astype("float64"))

    @classmethod
    def concat(cls, parts: list["UserRows"]) -> "UserRows":
        """The rows of `parts` one after another (same columns)."""
        def joined(attr: str):
            values = [getattr(p, attr) for p in parts]
            return None if any(v is None for v in values) else np.concatenate(values)

        return cls(np.concatenate([p.x for p in parts]), parts[0].columns, np.concatenate([p.horizon_days for p in parts]),
                   joined("y"), joined("cutoff"))

    def take(self, mask: np.ndarray) -> "UserRows":
        return UserRows(self.x[mask], self.columns, self.horizon_days[mask],
                        None if self.y is None else self.y[mask], None if self.cutoff is None else self.cutoff[mask])


def log_odds(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), p clipped to [1e-7, 1 - 1e-7]: a candidate's score on the scale blends and stacks combine."""
    p = np.clip(np.asarray(p, dtype="float64"), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def top_contributions_from(values: np.ndarray, columns: list[str], top_k: int) -> list[list[dict]]:
    """The `top_k` largest |contribution| per row as [{"feature", "contribution"}], largest first."""
    values = np.asarray(values, dtype="float64")
    k = min(top_k, values.shape[1]) if values.ndim == 2 and values.shape[1] else 0
    order = np.argsort(-np.abs(values), axis=1, kind="stable")[:, :k]
    return [[{"feature": columns[j], "contribution": float(row[j])} for j in idx] for row, idx in zip(values, order)]
