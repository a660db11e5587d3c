"""BG/NBD (shopsight.btyd) as a user-level binary candidate, on the full-history features.

The transactions are purchase days (propensity: P(at least one purchase within the horizon)) or active days
(churn: P(no activity within the horizon)). (x, t_x, T) come from the lifetime features, so the same model
scores a dataset row, a batch of users and a request history:
- purchase: x = repeat_purchase_days, t_x = purchase_span_days, T = first_purchase_days_ago; a user without a
  purchase is taken as acquired at their first event with no repeat purchase (x = t_x = 0, T = tenure_days);
- activity: x = active_days_total - 1, T = tenure_days, t_x = T - recency_days.
Fitted on the users at the latest training cutoff (one observation per user, as the model assumes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from shopsight.candidates.base import Candidate, register
from shopsight.candidates.user_rows import UserRows

MODEL_FILE = "bgnbd.json"


def rfm_from_rows(data: UserRows, events: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, t_x, T) in days from the lifetime features, clipped to the model's domain."""
    if events == "purchase":
        bought = data.raw("purchase_days_total") > 0
        x = np.where(bought, data.raw("repeat_purchase_days"), 0.0)
        T = np.where(bought, data.raw("first_purchase_days_ago"), data.raw("tenure_days"))
        t_x = np.where(bought, data.raw("purchase_span_days"), 0.0)
    elif events == "activity":
        T = data.raw("tenure_days")
        x = np.maximum(data.raw("active_days_total") - 1.0, 0.0)
        t_x = T - data.raw("recency_days")
    else:
        raise ValueError(f"bgnbd events must be purchase or activity, not {events!r}")
    x = np.maximum(np.round(x), 0.0)
    T = np.maximum(T, 0.0)
    t_x = np.where(x > 0, np.clip(t_x, 0.0, T), 0.0)
    return x, t_x, T


@register("user_binary", "bgnbd")
class BGNBDCandidate(Candidate):
    """config: events (purchase | activity), score (buy | no_activity), time_unit_days, penalizer."""

    kind = "user_binary"
    family = "btyd"

    def __init__(self, name: str, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(name, config)
        self.params: dict[str, float] = {}

    @property
    def _unit(self) -> float:
        return float(self.config.get("time_unit_days", 7.0))

    def fit(self, train: UserRows, valid: UserRows) -> dict[str, Any]:
        from shopsight.btyd import fit_bgnbd

        rows = train if train.cutoff is None else train.take(train.cutoff == train.cutoff.max())
        x, t_x, T = rfm_from_rows(rows, self.config.get("events", "purchase"))
        penalizer = float(self.config.get("penalizer", 1e-3))
        try:
            fit = fit_bgnbd(x, t_x / self._unit, T / self._unit, penalizer=penalizer)
        except RuntimeError:  # small samples can push the optimiser to a boundary: retry once with a firmer penalty
            fit = fit_bgnbd(x, t_x / self._unit, T / self._unit, penalizer=max(10 * penalizer, 1e-2))
        self.params = {"r": fit.r, "alpha": fit.alpha, "a": fit.a, "b": fit.b}
        return {"fit_rows": int(len(rows)), **self.params}

    def predict(self, data: UserRows) -> np.ndarray:
        from shopsight.btyd import BGNBDParams, p_no_purchase_within

        if len(data) == 0:
            return np.zeros(0)
        x, t_x, T = rfm_from_rows(data, self.config.get("events", "purchase"))
        p_none = p_no_purchase_within(BGNBDParams(**self.params), data.horizon_days / self._unit, x, t_x / self._unit, T / self._unit)
        p_none = np.clip(p_none, 0.0, 1.0)
        return p_none if self.config.get("score", "buy") == "no_activity" else 1.0 - p_none

    def save(self, directory: Path) -> None:
        (Path(directory) / MODEL_FILE).write_text(json.dumps(self.params))

    @classmethod
    def load(cls, directory: Path, name: str, config: Mapping[str, Any]) -> "BGNBDCandidate":
        out = cls(name, config)
        out.params = json.loads((Path(directory) / MODEL_FILE).read_text())
        return out
