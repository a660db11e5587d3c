"""The per-request baseline of bench/bench_serving.py: the same model and feature code as bentos/service.py, with
the same compiled call (tf.function, warmed up), but no adaptive batching: one call per request. The difference
to the service is what batching adds. (A `model.predict` per request would mostly measure Keras' fixed ~45 ms
per-call cost, not serving.) Not for production.

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
        import tensorflow as tf

        path = Path(self.propensity_ref.path)
        self.tag = str(self.propensity_ref.tag)
        self.feature_columns = json.loads((path / "feature_columns.json").read_text())
        model = keras.models.load_model(path / "model.keras")
        spec = tf.TensorSpec(shape=(None, len(self.feature_columns)), dtype=tf.float32)
        self.compiled = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        self.compiled(tf.zeros((1, len(self.feature_columns))))  # traced before the first request

    @bentoml.api
    def predict_propensity(self, users: list[UserHistory]) -> list[PropensityOut]:
        x, active, as_ofs = features_for_histories(users, PARAMS.features)
        probs = self.compiled(x).numpy().ravel()  # one compiled call per request: no batching across requests
        return [
            PropensityOut(user_id=u.user_id, probability=float(p), model=self.tag, as_of=t, recent_activity=a)
            for u, p, a, t in zip(users, probs, active, as_ofs)
        ]
