"""A learned candidate (logistic regression, LightGBM, the MLP) that takes other fitted candidates' scores as extra
inputs: stacking, e.g. LightGBM over the user features plus BG/NBD's P(purchase within the horizon).

BG/NBD and Pareto/NBD see the whole purchase history through a model of how customers buy and drop out; the
features a tree or a network sees are windows and counts of the same history. On the Taobao head's one-day churn
BG/NBD ranked the test day's users better than every learned model; handed its score, a learned model may add to it
where the features say more. Measured on the real sets (README), it did not: within +-0.017 of each family alone.

The inputs are candidates listed before this one in the task's `candidates` (the task hands the fitted ones over,
as it does a blend's members), fitted on the training rows without their labels (BTYD models fit the histories
only), so their scores on the training rows are no more in-sample than a feature is. Each input enters as its
log-odds. After the choice the task refits the inputs first (candidate order), then this candidate on their
refitted scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from shopsight.candidates.base import Candidate, get_model, load_candidate, register, save_candidate
from shopsight.candidates.user_rows import UserRows, log_odds

STACK_FILE = "stacked.json"
BASE_DIR = "base"
INPUTS_DIR = "inputs"


def input_column(name: str) -> str:
    """The model input column an input candidate's score becomes."""
    return f"{name}_log_odds"


@register("user_binary", "stacked")
class StackedCandidate(Candidate):
    """config: base (the learned family: logistic_regression | lightgbm | mlp), base_config (its own config), inputs
    (the names of candidates fitted before it, whose scores it takes; the task sets `inputs` to the fitted ones)."""

    kind = "user_binary"
    family = "stacked"

    def __init__(self, name: str, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(name, config)
        self.base = get_model("user_binary", self.config["base"], self.config.get("base_config", {}))
        self.inputs: dict[str, Candidate] = {}

    @property
    def early_stopping(self) -> bool:  # type: ignore[override]
        """Whether `fit`'s second argument is for stopping early: as the base's."""
        return bool(type(self.base).early_stopping)

    def _with_inputs(self, data: UserRows) -> UserRows:
        wanted = list(self.config.get("inputs", []))
        missing = [n for n in wanted if n not in self.inputs]
        if not wanted or missing:
            raise ValueError(f"stacked candidate {self.name}: needs its inputs {wanted} fitted and listed before it in the "
                             f"task's candidates (not fitted: {missing})")
        x = np.column_stack([data.x.astype("float64"), *(log_odds(self.inputs[n].predict(data)) for n in wanted)])
        return UserRows(x, [*data.columns, *(input_column(n) for n in wanted)], data.horizon_days, data.y, data.cutoff)

    def fit(self, train: UserRows, valid: UserRows) -> dict[str, Any]:
        self.base.name = f"{self.name}_base"  # the task names a candidate after building it (a Keras name has no '/')
        return {"base": self.config["base"], "inputs": list(self.config.get("inputs", [])),
                **self.base.fit(self._with_inputs(train), self._with_inputs(valid))}

    def refit(self, rows: UserRows) -> dict[str, Any]:
        return self.base.refit(self._with_inputs(rows))

    def predict(self, data: UserRows) -> np.ndarray:
        if len(data) == 0:
            return np.zeros(0)
        return self.base.predict(self._with_inputs(data))

    def explain(self, data: UserRows, top_k: int) -> list[list[dict]]:
        """The base's own explanation, the inputs' scores among the features (named <input>_log_odds)."""
        if len(data) == 0 or not hasattr(self.base, "explain"):
            return [[] for _ in range(len(data))]
        return self.base.explain(self._with_inputs(data), top_k)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        save_candidate(self.base, directory / BASE_DIR)
        for name, model in self.inputs.items():
            save_candidate(model, directory / INPUTS_DIR / name)
        (directory / STACK_FILE).write_text(json.dumps({"base": self.config["base"], "inputs": list(self.inputs)}))

    @classmethod
    def load(cls, directory: Path, name: str, config: Mapping[str, Any]) -> "StackedCandidate":
        directory = Path(directory)
        meta = json.loads((directory / STACK_FILE).read_text())
        out = cls(name, config)
        out.base = load_candidate(directory / BASE_DIR)
        out.inputs = {n: load_candidate(directory / INPUTS_DIR / n) for n in meta["inputs"]}
        return out
