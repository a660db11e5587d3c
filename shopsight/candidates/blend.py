"""A blend of fitted candidates of any family as a candidate itself: the mean of the members' standardised
log-odds. The standardisation (mean, standard deviation of each member's log-odds) comes from the training rows,
and there are no weights to fit, so the blend has nothing to overfit on a small validation set, where it still
has to win like any other candidate. On Online Retail II the blend of logistic regression, LightGBM and the MLP
led every single model on validation and on test (bench/realdata_tabular.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from shopsight.candidates.base import Candidate, load_candidate, register, save_candidate
from shopsight.candidates.user_rows import UserRows, log_odds

STATS_FILE = "blend.json"
MEMBERS_DIR = "members"


@register("user_binary", "blend")
class BlendCandidate(Candidate):
    """config: members (candidate names, fitted before the blend; the task hands them over in `members`)."""

    kind = "user_binary"
    family = "blend"

    def __init__(self, name: str, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(name, config)
        self.members: dict[str, Candidate] = {}
        self.stats: dict[str, tuple[float, float]] = {}

    def fit(self, train: UserRows, valid: UserRows) -> dict[str, Any]:
        wanted = list(self.config.get("members", []))
        missing = [m for m in wanted if m not in self.members]
        if len(wanted) < 2 or missing:
            raise ValueError(f"blend {self.name}: needs at least two fitted members listed before it in the task's candidates "
                             f"(members {wanted}, not fitted: {missing})")
        self.members = {m: self.members[m] for m in wanted}
        for name, model in self.members.items():
            z = log_odds(model.predict(train))
            self.stats[name] = (float(z.mean()), float(z.std()) or 1.0)
        return {"members": wanted}

    def predict(self, data: UserRows) -> np.ndarray:
        if len(data) == 0:
            return np.zeros(0)
        z = np.mean([(log_odds(m.predict(data)) - self.stats[n][0]) / self.stats[n][1] for n, m in self.members.items()], axis=0)
        return 1.0 / (1.0 + np.exp(-z))

    def explain(self, data: UserRows, top_k: int) -> list[list[dict]]:
        """The members' own contributions, each divided by its member's log-odds scale, summed per feature."""
        if len(data) == 0:
            return []
        from shopsight.candidates.user_rows import top_contributions_from

        total = np.zeros(data.x.shape, dtype="float64")
        for name, model in self.members.items():
            if hasattr(model, "attributions"):
                total += np.asarray(model.attributions(data), dtype="float64") / self.stats[name][1]
        return top_contributions_from(total / len(self.members), data.columns, top_k)

    def save(self, directory: Path) -> None:
        for name, model in self.members.items():
            save_candidate(model, Path(directory) / MEMBERS_DIR / name)
        (Path(directory) / STATS_FILE).write_text(json.dumps({"members": list(self.members), "stats": self.stats}))

    @classmethod
    def load(cls, directory: Path, name: str, config: Mapping[str, Any]) -> "BlendCandidate":
        out = cls(name, config)
        meta = json.loads((Path(directory) / STATS_FILE).read_text())
        out.members = {m: load_candidate(Path(directory) / MEMBERS_DIR / m) for m in meta["members"]}
        out.stats = {m: tuple(v) for m, v in meta["stats"].items()}
        return out
