"""The baseline of bench/bench_serving.py: the same model and feature code as bentos/service.py, served the
naive way (no adaptive batching, `model.predict` once per request). Not for production.

    bentoml serve bench.naive_service:NaiveService --port 3001   # with SHOPSIGHT_PROPENSITY_TAG=propensity:<v>
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import bentoml

from shopsight.config import Params, load_params
from shopsight.serving import PropensityOut, UserHistory, features_for_histories

PARAMS = load_params(os.environ["SHOPSIGHT_PARAMS"]) if os.environ.get("SHOPSIGHT_PARAMS") else Params()


@bentoml.service(name="shopsight_naive", traffic={"timeout": 60}, http={"host": "127.0.0.1"}, workers=1)
class NaiveService:
    propensity_ref = bentoml.models.BentoModel(os.environ.get("SHOPSIGHT_PROPENSITY_TAG", "propensity:latest"))

    def __init__(self) -> None:
        import keras

        path = Path(self.propensity_ref.path)
        self.tag = str(self.propensity_ref.tag)
        self.feature_columns = json.loads((path / "feature_columns.json").read_text())
        self.model = keras.models.load_model(path / "model.keras")

    @bentoml.api
    def predict_propensity(self, users: list[UserHistory]) -> list[PropensityOut]:
        x, active, as_ofs = features_for_histories(users, PARAMS.features)
        probs = self.model.predict(x, verbose=0).ravel()  # the naive part: a full predict() per request
        return [
            PropensityOut(user_id=u.user_id, probability=float(p), model=self.tag, as_of=t, recent_activity=a)
            for u, p, a, t in zip(users, probs, active, as_ofs)
        ]
