"""statsforecast's local methods as demand candidates (family "statsforecast"), used through the library
(Nixtla statsforecast, pinned 2.1.1): SeasonalNaive, AutoETS, and the intermittent-demand methods
CrostonOptimized (or CrostonClassic), ADIDA and IMAPA, which suit item series that are mostly zeros.

Local models: nothing is learnt across series, so `fit` only records settings and `predict` fits every row of a
`DemandWindow` on its own last `demand.statsforecast.history_days` days. At serving time a statistical champion
therefore fits each requested series on its history (the cost per request is in bench/realdata_demand.py).
An all-zero history forecasts zero without calling the library (Croston-type methods are undefined there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import pandas as pd

from shopsight.candidates import Candidate, register
from shopsight.demand import DemandSeries, DemandWindow

METHODS = {"sf_seasonal_naive": "SeasonalNaive", "auto_ets": "AutoETS", "croston": "Croston", "adida": "ADIDA", "imapa": "IMAPA"}


def statsforecast_model(name: str, season: int, croston: str = "optimized"):
    """The statsforecast model object behind candidate `name`."""
    from statsforecast import models

    if name == "sf_seasonal_naive":
        return models.SeasonalNaive(season_length=season)
    if name == "auto_ets":
        return models.AutoETS(season_length=season)
    if name == "croston":
        return models.CrostonOptimized() if croston == "optimized" else models.CrostonClassic()
    if name == "adida":
        return models.ADIDA()
    if name == "imapa":
        return models.IMAPA()
    raise ValueError(f"unknown statsforecast demand candidate {name!r}; known: {', '.join(METHODS)}")


def statsforecast_forecast(history: np.ndarray, horizon: int, name: str, season: int, croston: str = "optimized") -> np.ndarray:
    """Forecasts [n, horizon] (>= 0) of one statsforecast method, each row fitted on its own history."""
    from statsforecast import StatsForecast
    from statsforecast.models import SeasonalNaive

    history = np.asarray(history, dtype="float64")
    n, t = history.shape
    out = np.zeros((n, horizon))
    active = np.flatnonzero(history.sum(axis=1) > 0)
    if len(active) == 0 or t == 0:
        return out
    frame = pd.DataFrame({"unique_id": np.repeat(active, t), "ds": np.tile(np.arange(t), len(active)),
                          "y": history[active].ravel()})
    sf = StatsForecast(models=[statsforecast_model(name, season, croston)], freq=1, n_jobs=1,
                       fallback_model=SeasonalNaive(season_length=season))  # a failed fit falls back, never NaN
    pred = sf.forecast(h=horizon, df=frame)
    column = [c for c in pred.columns if c not in ("unique_id", "ds")][0]
    pred = pred.sort_values(["unique_id", "ds"])
    values = pred[column].to_numpy(dtype="float64").reshape(len(active), horizon)
    order = pred["unique_id"].to_numpy().reshape(len(active), horizon)[:, 0]
    out[order.astype(int)] = np.nan_to_num(values, nan=0.0)
    return np.clip(out, 0.0, None)


class StatsforecastDemand(Candidate):
    kind: ClassVar[str] = "demand"
    family: ClassVar[str] = "statsforecast"

    def fit(self, train: DemandSeries, valid: DemandWindow) -> dict[str, Any]:
        statsforecast_model(self.name, self.config["season_days"])  # an unknown name fails here, not at predict
        return {"method": METHODS[self.name]}

    def predict(self, data: DemandWindow) -> np.ndarray:
        sf = self.config["statsforecast"]
        history = data.history[:, -sf["history_days"]:]
        return statsforecast_forecast(history, data.horizon, self.name, self.config["season_days"], sf.get("croston", "optimized"))

    def save(self, directory: Path) -> None:
        """The config (in candidate.json) is the whole model: every forecast fits on its own history."""

    @classmethod
    def load(cls, directory: Path, name: str, config: Mapping[str, Any]) -> "Candidate":
        return cls(name, config)


for _name in METHODS:
    register("demand", _name)(StatsforecastDemand)
