"""A per-series choice of forecasting method (family "per_series_choice", candidate "best_per_series").

Each series gets the member (rule or statsforecast candidate, optionally reshaped by the pooled day-of-week
profile) with the lowest total absolute error over `select_windows` horizon-long windows that END AT the
validation origin (so the candidate's own validation score is out of sample). Ties go to the member listed
first (the simpler). A series not seen in fitting (a new item at serving time) gets the member that won the
most series of its level. The choices are saved as JSON; serving fits the chosen members on the request's
history, as the members themselves would.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from shopsight.candidates import Candidate, get_model, register
from shopsight.demand import LEVELS, DemandSeries, DemandWindow, apply_weekday_profile, weekday_profile, window_at

DOW_SUFFIX = "+weekday"
CHOICE_FILE = "choice.json"


@register("demand", "best_per_series")
class PerSeriesChoice(Candidate):
    kind: ClassVar[str] = "demand"
    family: ClassVar[str] = "per_series_choice"

    def __init__(self, name: str, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(name, config)
        self.choice: dict[str, dict[str, str]] = {}
        self.default: dict[str, str] = {}
        self.profile: dict[str, list[float]] = {}

    def _members(self) -> dict[str, Candidate]:
        members = self.config["per_series_choice"]["members"]
        if self.name in members:
            raise ValueError(f"demand.per_series_choice.members must not name {self.name!r} itself")
        chosen = {m: get_model("demand", m, self.config) for m in members}
        fitted = [m for m, c in chosen.items() if c.family not in ("rule", "statsforecast")]
        if fitted:  # members are rebuilt from their config at predict time: only families with nothing to fit
            raise ValueError(f"demand.per_series_choice.members: {', '.join(fitted)} must be fitted; use rule or statsforecast candidates")
        return chosen

    def _options(self, members: dict[str, Candidate], window: DemandWindow) -> dict[str, np.ndarray]:
        """Every option's forecast of `window`: each member as is and, if enabled, reshaped by the weekday profile."""
        out = {}
        levels = np.asarray(window.levels)
        for name, member in members.items():
            f = member.predict(window)
            out[name] = f
            if self.config["per_series_choice"]["weekday_profile"] and self.profile:
                shaped = f.copy()
                for lvl, profile in self.profile.items():
                    sel = levels == lvl
                    if sel.any():
                        shaped[sel] = apply_weekday_profile(f[sel], window.start[sel], np.asarray(profile))
                out[name + DOW_SUFFIX] = shaped
        return out

    def fit(self, train: DemandSeries, valid: DemandWindow) -> dict[str, Any]:
        settings = self.config["per_series_choice"]
        h = self.config["horizon_days"]
        levels = np.asarray(train.levels)
        self.profile = {lvl: weekday_profile(train.units[levels == lvl], train.days, settings["profile_weeks"]).round(6).tolist()
                        for lvl in LEVELS if (levels == lvl).any()}
        members = self._members()
        for m in members.values():
            m.fit(train, valid)
        end = len(train.days)
        origins = [end - k * h for k in range(1, settings["select_windows"] + 1) if end - k * h >= h]
        if not origins:
            raise ValueError(f"{end} training days leave no window for demand.per_series_choice.select_windows")
        errors: dict[str, np.ndarray] = {}
        for o in origins:
            window = window_at(train, o, h)
            for name, f in self._options(members, window).items():
                errors[name] = errors.get(name, 0.0) + np.abs(window.actual - f).sum(axis=1)
        names = list(errors)
        best = np.argmin(np.stack([errors[n] for n in names]), axis=0)  # argmin keeps the first (simplest) on ties
        self.choice = {lvl: {} for lvl in LEVELS}
        for sid, lvl, b in zip(train.ids, train.levels, best):
            self.choice[lvl][sid] = names[b]
        self.default = {lvl: Counter(c.values()).most_common(1)[0][0] for lvl, c in self.choice.items() if c}
        return {"chosen": {lvl: dict(Counter(c.values()).most_common()) for lvl, c in self.choice.items()},
                "select_windows": len(origins), "weekday_profile": self.profile}

    def predict(self, data: DemandWindow) -> np.ndarray:
        picks = [self.choice.get(lvl, {}).get(sid) or self.default.get(lvl) or next(iter(self.default.values()))
                 for sid, lvl in zip(data.ids, data.levels)]
        members = self._members()
        out = np.zeros((len(picks), data.horizon))
        for option in sorted(set(picks)):
            rows = np.flatnonzero(np.asarray(picks) == option)
            base = option.removesuffix(DOW_SUFFIX)
            sub = data.rows(rows)
            f = members[base].predict(sub)
            if option.endswith(DOW_SUFFIX):
                for lvl, profile in self.profile.items():
                    sel = np.asarray(sub.levels) == lvl
                    if sel.any():
                        f[sel] = apply_weekday_profile(f[sel], sub.start[sel], np.asarray(profile))
            out[rows] = f
        return np.clip(out, 0.0, None)

    def save(self, directory: Path) -> None:
        (Path(directory) / CHOICE_FILE).write_text(json.dumps({"choice": self.choice, "default": self.default, "profile": self.profile}))

    @classmethod
    def load(cls, directory: Path, name: str, config: Mapping[str, Any]) -> "Candidate":
        candidate = cls(name, config)
        saved = json.loads((Path(directory) / CHOICE_FILE).read_text())
        candidate.choice, candidate.default, candidate.profile = saved["choice"], saved["default"], saved["profile"]
        return candidate
