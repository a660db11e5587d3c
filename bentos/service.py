"""BentoML service: the champion models behind validated, adaptively batched endpoints."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Annotated

import bentoml
import numpy as np
from bentoml.exceptions import NotFound
from bentoml.exceptions import BadInput, ServiceUnavailable

from pydantic import BaseModel, Field

from shopsight.config import Params, load_params
from shopsight.prediction_log import Prediction, open_prediction_log
from shopsight import prediction_records
from shopsight.security import RequestGuard
from shopsight.serving import PropensityOut, UserHistory, features_for_histories
from shopsight.recommender import RecentItems, RecommendOut, SimilarOut
from shopsight.churn import ChurnOut, ChurnRequest
from shopsight.demand import DemandForecastOut, DemandRequest
from shopsight.explain import ExplainedScoreOut


def _load_service_params() -> Params:
    # params.yaml travels with the bento; the defaults apply when it is absent.
    for candidate in (Path(os.environ.get("SHOPSIGHT_PARAMS", "params.yaml")), Path(__file__).resolve().parent.parent / "params.yaml"):
        if candidate.exists():
            return load_params(candidate)
    return Params()


def resolve_model_tag(task: str) -> str:
    """$SHOPSIGHT_<TASK>_TAG, else the registry's champion if it is in the active model store, else <task>:latest."""
    explicit = os.environ.get(f"SHOPSIGHT_{task.upper()}_TAG")
    if explicit:
        return explicit
    from shopsight.registry import champion_tag

    champion = champion_tag(task)
    if champion:
        try:
            bentoml.models.get(champion)
            return champion
        except NotFound:
            pass  # a built bento carries only the models it was built with
    return f"{task}:latest"


def optional_model_tag(task: str) -> str | None:
    """The tag resolve_model_tag picks, or None when the store has no model for the task (the endpoint then answers 503)."""
    tag = resolve_model_tag(task)
    try:
        bentoml.models.get(tag)
        return tag
    except NotFound:
        return None


RECOMMENDER_TAG = optional_model_tag("recommender")
CHURN_TAG = optional_model_tag("churn")
DEMAND_TAG = optional_model_tag("demand")
PARAMS = _load_service_params()
SERVING = PARAMS.serving


class ValidatedUser(BaseModel):
    user_id: str
    n_events: int


# Bounded lists: an empty or oversized request is a 400 naming `users` before any work is done.
UserBatch = Annotated[list[UserHistory], Field(min_length=1, max_length=SERVING.max_users_per_request)]
log = logging.getLogger("shopsight.service")


# http.host: `bentoml serve` binds 127.0.0.1 unless --host or serving.host says otherwise.
@bentoml.service(name="shopsight", traffic={"timeout": SERVING.timeout_s}, http={"host": SERVING.host}, workers=1)
class ShopsightService:
    propensity_ref = bentoml.models.BentoModel(resolve_model_tag("propensity"))
    if RECOMMENDER_TAG is not None:  # next-item model: optional, so a store without one still serves propensity
        recommender_ref = bentoml.models.BentoModel(RECOMMENDER_TAG)
    if CHURN_TAG is not None:  # churn and demand are optional too: their endpoints answer 503 without a model
        churn_ref = bentoml.models.BentoModel(CHURN_TAG)
    if DEMAND_TAG is not None:
        demand_ref = bentoml.models.BentoModel(DEMAND_TAG)

    def __init__(self) -> None:
        self._propensity_ready = threading.Event()
        self._load_error: BaseException | None = None
        self.prediction_log = open_prediction_log(PARAMS)
        try:
            path = Path(self.propensity_ref.path)
        except Exception as exc:  # noqa: BLE001 - turn any store error into one actionable message
            raise RuntimeError(
                f"no propensity model {self.propensity_ref.tag} in the BentoML store "
                f"({os.environ.get('BENTOML_HOME', '~/bentoml')}): run `make demo` or `shopsight register` first"
            ) from exc
        self.propensity_tag = str(self.propensity_ref.tag)
        self.feature_columns = json.loads((path / "feature_columns.json").read_text())
        # Load and warm up off the startup path: /livez answers at once, /readyz is 503 until the model is warm.
        import tensorflow  # noqa: F401 - import it once here: two threads importing it at the same time deadlock

        threading.Thread(target=self._load_propensity, args=(path,), name="propensity-warmup", daemon=True).start()
        self.recommender = None
        if RECOMMENDER_TAG is not None:
            from shopsight.recommender import SequenceScorer

            self.recommender_tag = str(self.recommender_ref.tag)
            self.recommender = SequenceScorer(Path(self.recommender_ref.path))  # compiled and warmed up on load
        self._init_churn_demand(path)

    def _init_churn_demand(self, propensity_path: Path) -> None:
        """Compiled scorers (forward pass and integrated gradients) for explanations, churn and demand."""
        from shopsight.demand import DemandScorer
        from shopsight.explain import ExplainedClassifier

        self.propensity_explainer = ExplainedClassifier(propensity_path, PARAMS.propensity.explain.ig_steps)
        self.churn = self.demand = None
        if CHURN_TAG is not None:
            churn_path = Path(self.churn_ref.path)
            self.churn_tag = str(self.churn_ref.tag)
            self.churn_horizon = json.loads((churn_path / "task.json").read_text())["horizon_days"]
            self.churn = ExplainedClassifier(churn_path, PARAMS.churn.explain.ig_steps)
        if DEMAND_TAG is not None:
            self.demand_tag = str(self.demand_ref.tag)
            self.demand = DemandScorer(Path(self.demand_ref.path))

    def _load_propensity(self, path: Path) -> None:
        try:
            import keras
            import tensorflow as tf

            model = keras.models.load_model(path / "model.keras")
            spec = tf.TensorSpec(shape=(None, len(self.feature_columns)), dtype=tf.float32)
            # A compiled call: ~0.3 ms per batch against ~45 ms for model.predict.
            compiled = tf.function(lambda x: model(x, training=False), input_signature=[spec])
            self._warm_up(compiled)
            self._propensity = compiled
            self._propensity_ready.set()
            log.info("propensity model %s loaded and warmed up", self.propensity_tag)
        except BaseException as exc:  # noqa: BLE001 - reported by /livez and /readyz, and in the log
            self._load_error = exc
            log.exception("loading the propensity model %s failed", self.propensity_tag)

    def _warm_up(self, compiled) -> None:
        """Trace the compiled call and run the feature code at every batch size traffic will bring."""
        from datetime import datetime, timezone

        from shopsight.serving import EventIn

        now = datetime.now(timezone.utc)
        user = UserHistory(user_id="warmup", events=[EventIn(item_id="i", event_type="view", timestamp=now, price=1.0)], as_of=now)
        sizes = sorted({min(2**i, SERVING.max_batch_size) for i in range(SERVING.max_batch_size.bit_length() + 1)})
        for _ in range(SERVING.warmup_rounds):
            for size in sizes:
                x, _, _ = features_for_histories([user] * size, PARAMS.features)
                out = compiled(x).numpy()
                if not np.isfinite(out).all():
                    raise RuntimeError(f"propensity model {self.propensity_tag} gave non-finite output on warm-up")

    def __is_ready__(self) -> bool:
        """/readyz: 200 only once the models are loaded and warmed up."""
        return self._propensity_ready.is_set()

    def __is_alive__(self) -> bool:
        """/livez: 503 when loading failed, so an orchestrator restarts the worker."""
        return self._load_error is None

    def _require_propensity(self):
        if not self._propensity_ready.is_set():
            raise ServiceUnavailable("the propensity model is still loading: retry when /readyz answers 200")
        return self._propensity

    def _log(self, endpoint: str, model: str, predictions: list[Prediction]) -> None:
        if self.prediction_log is not None:
            self.prediction_log.append(endpoint, model, predictions)

    @bentoml.on_shutdown
    def _close_prediction_log(self) -> None:
        if self.prediction_log is not None:
            self.prediction_log.close()

    # Adaptive batching: see the comment on serving.max_batch_size / max_latency_ms in params.yaml (bench/bench_serving.py).
    @bentoml.api(batchable=True, max_batch_size=SERVING.max_batch_size, max_latency_ms=SERVING.max_latency_ms)
    def predict_propensity(self, users: UserBatch) -> list[PropensityOut]:
        """Probability that each user purchases within the horizon, from their recent events."""
        if not users:
            return []
        compiled = self._require_propensity()
        x, active, as_ofs = features_for_histories(users, PARAMS.features)
        probs = compiled(x).numpy().ravel()
        calibrated = self.propensity_explainer.calibrator.apply(probs)  # the model dir's calibration.json
        out = [
            PropensityOut(user_id=u.user_id, probability=float(p), calibrated_probability=float(c), model=self.propensity_tag, as_of=t, recent_activity=a)
            for u, p, c, a, t in zip(users, probs, calibrated, active, as_ofs)
        ]
        self._log("predict_propensity", self.propensity_tag, [
            Prediction(o.user_id, dict(zip(self.feature_columns, row.tolist())),
                       {"probability": o.probability, "calibrated_probability": o.calibrated_probability, "recent_activity": o.recent_activity}, o.as_of)
            for o, row in zip(out, x)
        ])
        return out

    @bentoml.api(batchable=True, max_batch_size=SERVING.max_batch_size, max_latency_ms=SERVING.max_latency_ms)
    def validate_users(self, users: UserBatch) -> list[ValidatedUser]:
        """Check histories against the schema and limits without scoring them (no model; the server's own cost)."""
        return [ValidatedUser(user_id=u.user_id, n_events=len(u.events)) for u in users]

    def _recommender_or_503(self):
        if self.recommender is None:
            raise ServiceUnavailable("no recommender model in the BentoML store: run `dvc repro` then `shopsight register-recommender`")
        return self.recommender

    @bentoml.api
    def recommend(self, users: list[RecentItems], k: int = 10, exclude_purchased: bool | None = None) -> list[RecommendOut]:
        """Top-k next items per user from their recent item ids (one matrix product for the whole request);
        unknown ids are ignored and reported, an empty or unknown history gets the most popular items."""
        from shopsight.recommender import RequestError, recommend_for_requests

        scorer = self._recommender_or_503()
        if len(users) > SERVING.max_users_per_request:
            raise BadInput(f"users: {len(users)} histories; at most {SERVING.max_users_per_request} per request (serving.max_users_per_request)")
        try:
            out = recommend_for_requests(scorer, users, k, exclude_purchased, PARAMS.recommender.k_max, self.recommender_tag)
        except RequestError as exc:
            raise BadInput(str(exc)) from exc
        self._log("recommend", self.recommender_tag, prediction_records.recommend_records(users, out))
        return out

    @bentoml.api
    def similar_items(self, item_ids: list[str], k: int = 10) -> list[SimilarOut]:
        """Items nearest to each given item in the learned item-embedding space (cosine); unknown ids answer known=false."""
        from shopsight.recommender import RequestError, similar_for_requests

        scorer = self._recommender_or_503()
        if len(item_ids) > SERVING.max_users_per_request:
            raise BadInput(f"item_ids: {len(item_ids)} ids; at most {SERVING.max_users_per_request} per request")
        try:
            out = similar_for_requests(scorer, item_ids, k, PARAMS.recommender.k_max, self.recommender_tag)
        except RequestError as exc:
            raise BadInput(str(exc)) from exc
        self._log("similar_items", self.recommender_tag, prediction_records.similar_records(item_ids, out))
        return out

    @bentoml.api
    def explain_propensity(self, users: list[UserHistory]) -> list[ExplainedScoreOut]:
        """Calibrated purchase probability per user with its top contributing features (integrated gradients)."""
        from shopsight.explain import explain_requests

        if len(users) > SERVING.max_users_per_request:
            raise BadInput(f"users: {len(users)} histories; at most {SERVING.max_users_per_request} per request (serving.max_users_per_request)")
        out = explain_requests(self.propensity_explainer, users, PARAMS.features, self.propensity_tag, PARAMS.propensity.explain.top_k)
        self._log("explain_propensity", self.propensity_tag, prediction_records.explained_records(out))
        return out

    @bentoml.api(batchable=True, max_batch_size=SERVING.max_batch_size, max_latency_ms=SERVING.max_latency_ms)
    def churn_risk(self, users: list[ChurnRequest]) -> list[ChurnOut]:
        """Calibrated probability that each user has no activity in the churn horizon; `explain: true` adds reasons."""
        from shopsight.churn import score_churn_requests

        if self.churn is None:
            raise ServiceUnavailable("no churn model in the BentoML store: run `dvc repro` and register it (flows/training.py)")
        out = score_churn_requests(self.churn, users, PARAMS, self.churn_horizon, self.churn_tag, PARAMS.churn.explain.top_k)
        self._log("churn_risk", self.churn_tag, prediction_records.churn_records(out))
        return out

    @bentoml.api(batchable=True, max_batch_size=SERVING.max_batch_size, max_latency_ms=SERVING.max_latency_ms)
    def forecast_demand(self, series: list[DemandRequest]) -> list[DemandForecastOut]:
        """Daily units for the next horizon per item or category series, from a given or the stored history."""
        if self.demand is None:
            raise ServiceUnavailable("no demand model in the BentoML store: run `dvc repro` and register it (flows/training.py)")
        out = self.demand.forecast(series, self.demand_tag)
        self._log("forecast_demand", self.demand_tag, prediction_records.demand_records(series, out))
        return out


# Every POST endpoint: API key when $<serving.api_key_env> is set (401), body at most serving.max_body_kb (413).
ShopsightService.add_asgi_middleware(RequestGuard, max_body_bytes=SERVING.max_body_kb * 1024, api_key_env=SERVING.api_key_env)
