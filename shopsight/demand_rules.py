"""Rule forecasters for demand (family "rule"): seasonal naive, moving average, moving median.

Nothing to fit: each forecasts a row of a `DemandWindow` from that row's history alone, so serving one costs a
few microseconds per series. Their settings are the shared `demand.*` keys (season_days, moving_*_days).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from shopsight.candidates import Candidate, register
from shopsight.demand import DemandSeries, DemandWindow, moving_average, moving_median, seasonal_naive


class _RuleForecaster(Candidate):
    kind: ClassVar[str] = "demand"
    family: ClassVar[str] = "rule"

    def fit(self, train: DemandSeries, valid: DemandWindow) -> dict[str, Any]:
        return {}

    def save(self, directory: Path) -> None:
        """The config (in candidate.json) is the whole model."""

    @classmethod
    def load(cls, directory: Path, name: str, config: Mapping[str, Any]) -> "Candidate":
        return cls(name, config)


@register("demand", "seasonal_naive")
class SeasonalNaiveRule(_RuleForecaster):
    """Repeat the last `season_days` days."""

    def predict(self, data: DemandWindow) -> np.ndarray:
        return seasonal_naive(data.history, data.horizon, self.config["season_days"])


@register("demand", "moving_average")
class MovingAverageRule(_RuleForecaster):
    """The mean of the last `moving_average_days`, flat."""

    def predict(self, data: DemandWindow) -> np.ndarray:
        return moving_average(data.history, data.horizon, self.config["moving_average_days"])


@register("demand", "moving_median")
class MovingMedianRule(_RuleForecaster):
    """The median of the last `moving_median_days`, flat (zero for an item selling on under half the days)."""

    def predict(self, data: DemandWindow) -> np.ndarray:
        return moving_median(data.history, data.horizon, self.config["moving_median_days"])
