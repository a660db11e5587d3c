"""BG/NBD and Pareto/NBD (shopsight.btyd) as user-level binary candidates, on the full-history features.

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


class _BTYDCandidate(Candidate):
    """config: events (purchase | activity), score (buy | no_activity), time_unit_days, penalizer."""

    kind = "user_binary"
    family = "btyd"
    model_file: str

    def __init__(self, name: str, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(name, config)
        self.params: dict[str, float] = {}

    @property
    def _unit(self) -> float:
        return float(self.config.get("time_unit_days", 7.0))

    def _fit(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, penalizer: float) -> dict[str, float]:
        raise NotImplementedError

    def _p_none(self, horizon: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fit(self, train: UserRows, valid: UserRows) -> dict[str, Any]:
        rows = train if train.cutoff is None else train.take(train.cutoff == train.cutoff.max())
        x, t_x, T = rfm_from_rows(rows, self.config.get("events", "purchase"))
        penalizer = float(self.config.get("penalizer", 1e-3))
        try:
            self.params = self._fit(x, t_x / self._unit, T / self._unit, penalizer)
        except RuntimeError:  # small samples can push the optimiser to a boundary: retry once with a firmer penalty
            self.params = self._fit(x, t_x / self._unit, T / self._unit, max(10 * penalizer, 1e-2))
        return {"fit_rows": int(len(rows)), **self.params}

    def predict(self, data: UserRows) -> np.ndarray:
        if len(data) == 0:
            return np.zeros(0)
        x, t_x, T = rfm_from_rows(data, self.config.get("events", "purchase"))
        p_none = self._p_none(data.horizon_days / self._unit, x, t_x / self._unit, T / self._unit)
        broken = ~np.isfinite(p_none)
        if broken.any():  # np.clip would keep a NaN and the task would fail later on an unrelated-looking error
            i = int(np.flatnonzero(broken)[0])
            raise RuntimeError(f"{self.name}: {int(broken.sum())} of {len(p_none)} rows got no finite score (the first has x={x[i]:g}, "
                               f"t_x={t_x[i]:g}, T={T[i]:g} days; parameters {self.params}). This is a shopsight bug: please report it")
        p_none = np.clip(p_none, 0.0, 1.0)
        return p_none if self.config.get("score", "buy") == "no_activity" else 1.0 - p_none

    def save(self, directory: Path) -> None:
        (Path(directory) / self.model_file).write_text(json.dumps(self.params))

    @classmethod
    def load(cls, directory: Path, name: str, config: Mapping[str, Any]) -> "_BTYDCandidate":
        out = cls(name, config)
        out.params = json.loads((Path(directory) / cls.model_file).read_text())
        return out


@register("user_binary", "bgnbd")
class BGNBDCandidate(_BTYDCandidate):
    """BG/NBD: dropout only right after a purchase."""

    model_file = MODEL_FILE

    def _fit(self, x, t_x, T, penalizer):
        from shopsight.btyd import fit_bgnbd

        fit = fit_bgnbd(x, t_x, T, penalizer=penalizer)
        return {"r": fit.r, "alpha": fit.alpha, "a": fit.a, "b": fit.b}

    def _p_none(self, horizon, x, t_x, T):
        from shopsight.btyd import BGNBDParams, p_no_purchase_within

        return p_no_purchase_within(BGNBDParams(**self.params), horizon, x, t_x, T)


@register("user_binary", "paretonbd")
class ParetoNBDCandidate(_BTYDCandidate):
    """Pareto/NBD: dropout at any time (exponential lifetimes)."""

    model_file = "paretonbd.json"

    def _fit(self, x, t_x, T, penalizer):
        from shopsight.btyd import fit_paretonbd

        fit = fit_paretonbd(x, t_x, T, penalizer=penalizer)
        return {"r": fit.r, "alpha": fit.alpha, "s": fit.s, "beta": fit.beta}

    def _p_none(self, horizon, x, t_x, T):
        from shopsight.btyd import ParetoNBDParams, paretonbd_p_no_purchase_within

        return paretonbd_p_no_purchase_within(ParetoNBDParams(**self.params), horizon, x, t_x, T)
