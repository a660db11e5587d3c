"""LightGBM gradient-boosted trees as a user-level binary candidate: boosting rounds early-stopped on the ROC-AUC
of the rows `fit` gets as `valid` (held-out training users by default: selection.early_stopping), stored in LightGBM's own text format (no pickle), explained by its exact tree SHAP values."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from shopsight.candidates.base import Candidate, register
from shopsight.candidates.user_rows import UserRows, top_contributions_from

MODEL_FILE = "lightgbm.txt"
# LightGBM's own parameter names; params.yaml (<task>.lightgbm) overrides any of them.
DEFAULTS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.03,
    "num_leaves": 15,
    "min_data_in_leaf": 50,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "num_threads": 1,  # OpenMP threads spin: on a busy 2-core machine 110 rounds took 33 s with 2 threads, 1.3 s with 1
    "seed": 0,
    "verbose": -1,
}


@register("user_binary", "lightgbm")
class LightGBMCandidate(Candidate):
    """config: LightGBM parameters plus num_boost_round and early_stopping_rounds."""

    kind = "user_binary"
    family = "lightgbm"
    early_stopping = True

    def __init__(self, name: str, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(name, config)
        self.booster = None

    def _params(self) -> dict[str, Any]:
        own = {k: v for k, v in self.config.items() if k not in ("num_boost_round", "early_stopping_rounds")}
        return {**DEFAULTS, **own, "metric": "auc"}

    def fit(self, train: UserRows, valid: UserRows) -> dict[str, Any]:
        import lightgbm as lgb

        dtrain = lgb.Dataset(train.x, label=train.y, feature_name=_safe_names(train.columns), free_raw_data=False)
        dvalid = lgb.Dataset(valid.x, label=valid.y, reference=dtrain)
        rounds = int(self.config.get("num_boost_round", 2000))
        patience = int(self.config.get("early_stopping_rounds", 100))
        self.booster = lgb.train(self._params(), dtrain, num_boost_round=rounds, valid_sets=[dvalid], valid_names=["valid"],
                                 callbacks=[lgb.early_stopping(patience, verbose=False), lgb.log_evaluation(0)])
        return {"best_iteration": int(self.booster.best_iteration), "stop_auc_at_best": float(self.booster.best_score["valid"]["auc"])}

    def refit(self, rows: UserRows) -> dict[str, Any]:
        """The boosting rounds early stopping chose, on `rows` (train and validation), with no held-out set."""
        import lightgbm as lgb

        rounds = max(int(self.booster.best_iteration or self.booster.current_iteration()), 1)
        data = lgb.Dataset(rows.x, label=rows.y, feature_name=_safe_names(rows.columns), free_raw_data=False)
        self.booster = lgb.train(self._params(), data, num_boost_round=rounds)
        return {"rounds": rounds}

    def predict(self, data: UserRows) -> np.ndarray:
        if len(data) == 0:
            return np.zeros(0)
        return np.asarray(self.booster.predict(data.x, num_iteration=self.booster.best_iteration or None), dtype="float64")

    def explain(self, data: UserRows, top_k: int) -> list[list[dict]]:
        """Tree SHAP contributions (log-odds units), top_k per row."""
        if len(data) == 0:
            return []
        contrib = self.booster.predict(data.x, num_iteration=self.booster.best_iteration or None, pred_contrib=True)
        return top_contributions_from(np.asarray(contrib)[:, :-1], data.columns, top_k)  # the last column is the bias

    def attributions(self, data: UserRows) -> np.ndarray:
        contrib = self.booster.predict(data.x, num_iteration=self.booster.best_iteration or None, pred_contrib=True)
        return np.asarray(contrib)[:, :-1]

    def save(self, directory: Path) -> None:
        self.booster.save_model(str(Path(directory) / MODEL_FILE), num_iteration=self.booster.best_iteration or None)

    @classmethod
    def load(cls, directory: Path, name: str, config: Mapping[str, Any]) -> "LightGBMCandidate":
        import lightgbm as lgb

        out = cls(name, config)
        out.booster = lgb.Booster(model_file=str(Path(directory) / MODEL_FILE))
        return out


def _safe_names(columns: list[str]) -> list[str]:
    # LightGBM refuses some characters in feature names; ours are already plain identifiers
    return [c.replace(" ", "_") for c in columns]
