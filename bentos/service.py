"""BentoML service: the champion models behind validated, adaptively batched endpoints."""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from pathlib import Path
from typing import Annotated

import bentoml
import numpy as np
from bentoml.exceptions import NotFound
from bentoml.exceptions import ServiceUnavailable

from pydantic import BaseModel, Field, StrictBool, StrictInt

from shopsight.config import Params, load_params
from shopsight.prediction_log import Prediction, open_prediction_log
from shopsight import prediction_records
from shopsight.security import RequestGuard, UnavailableAnswer
from shopsight.serving import (MAX_EVENTS_PER_USER, Amount, Day, Id, OneLineClientErrors, PropensityOut, UserHistory,
                               answer_batch, features_for_histories, request_error, require_finite)
from shopsight.recommender import RecentItems, RecommendOut, SimilarOut
from shopsight.churn import ChurnOut, ChurnRequest
from shopsight.demand import MAX_HISTORY_DAYS, DemandForecastOut, DemandRequest
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


# ---- request schemas: the task modules' requests with strict types, bounded ids and sane dates ----
# (declared here: shopsight.serving is imported by the task modules, so it cannot import them)


class ChurnUser(ChurnRequest):
    explain: StrictBool = False


class DemandSeries(DemandRequest):
    series_id: Id
    history: list[Amount] | None = Field(None, max_length=MAX_HISTORY_DAYS, description="daily units, oldest first")
    start: Day | None = Field(None, description="first forecast day; default: the day after the stored data (or today)")


class RecommendUser(RecentItems):
    user_id: Id | None = None
    items: list[Id] = Field(default_factory=list, max_length=MAX_EVENTS_PER_USER)
    exclude_items: list[Id] = Field(default_factory=list, max_length=MAX_EVENTS_PER_USER, description="never recommend these")


def _bounded(item):
    """A request list of 1..serving.max_users_per_request items: an empty or oversized list is a 400 naming it."""
    return Annotated[list[item], Field(min_length=1, max_length=SERVING.max_users_per_request)]


UserBatch = _bounded(UserHistory)
ChurnBatch = _bounded(ChurnUser)
DemandBatch = _bounded(DemandSeries)
RecommendBatch = _bounded(RecommendUser)
ItemIdBatch = _bounded(Id)
log = logging.getLogger("shopsight.service")
# BentoML logs each failed request with a traceback: a client's 400 (or a shed 503) is one line instead.
logging.getLogger("bentoml._internal.server.http_app").addFilter(OneLineClientErrors())

_MISSING = {
    "recommender": "no recommender model in the BentoML store: run `dvc repro` then `shopsight register-recommender`",
    "churn": "no churn model in the BentoML store: run `dvc repro` and register it (flows/training.py)",
    "demand": "no demand model in the BentoML store: run `dvc repro` and register it (flows/training.py)",
}
_ENDPOINTS_OF = {"recommender": ("/recommend", "/similar_items"), "churn": ("/churn_risk",), "demand": ("/forecast_demand",)}
_UNAVAILABLE = {path: _MISSING[task] for task, tag in (("recommender", RECOMMENDER_TAG), ("churn", CHURN_TAG), ("demand", DEMAND_TAG))
                if tag is None for path in _ENDPOINTS_OF[task]}
_PROPENSITY_READY = threading.Event()  # one service instance per worker process
LOADING_RETRY_S = 5


def unavailable_reason(path: str) -> tuple[str, int | None] | None:
    """Why an endpoint cannot answer now, with a retry-after in seconds when waiting helps (UnavailableAnswer)."""
    if path in _UNAVAILABLE:
        return _UNAVAILABLE[path], None
    if path == "/predict_propensity" and not _PROPENSITY_READY.is_set():
        return "the propensity model is still loading: retry when /readyz answers 200", LOADING_RETRY_S
    return None


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
        self._propensity_ready = _PROPENSITY_READY
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
            from shopsight.recommender import load_scorer

            self.recommender_tag = str(self.recommender_ref.tag)
            # the validation champion, whatever its family (sequence model, co-occurrence, popularity)
            self.recommender = load_scorer(Path(self.recommender_ref.path))
        self._init_churn_demand(path)

    def _init_churn_demand(self, propensity_path: Path) -> None:
        """The churn and demand champions (whatever their family: shopsight.tasks.user_binary.ChampionScorer)."""
        from shopsight.demand import DemandScorer
        from shopsight.tasks.user_binary import ChampionScorer

        self.churn = self.demand = None
        if CHURN_TAG is not None:
            churn_path = Path(self.churn_ref.path)
            self.churn_tag = str(self.churn_ref.tag)
            self.churn_horizon = int(json.loads((churn_path / "task.json").read_text())["horizon_days"])
            self.churn = ChampionScorer(churn_path)
        if DEMAND_TAG is not None:
            self.demand_tag = str(self.demand_ref.tag)
            self.demand = DemandScorer(Path(self.demand_ref.path))

    def _load_propensity(self, path: Path) -> None:
        try:
            from shopsight.tasks.user_binary import ChampionScorer

            # Any family: a Keras champion runs as a compiled call (~0.3 ms per batch against ~45 ms for model.predict).
            scorer = ChampionScorer(path)
            self._warm_up(scorer)
            self._propensity = scorer
            self._propensity_ready.set()
            log.info("propensity champion %s (%s) loaded and warmed up", self.propensity_tag, scorer.family)
        except BaseException as exc:  # noqa: BLE001 - reported by /livez and /readyz, and in the log
            self._load_error = exc
            log.exception("loading the propensity model %s failed", self.propensity_tag)

    def _warm_up(self, scorer) -> None:
        """Trace the compiled call and run the feature code at every batch size traffic will bring."""
        from datetime import datetime, timezone

        from shopsight.serving import EventIn

        now = datetime.now(timezone.utc)
        user = UserHistory(user_id="warmup", events=[EventIn(item_id="i", event_type="view", timestamp=now, price=1.0)], as_of=now)
        sizes = sorted({min(2**i, SERVING.max_batch_size) for i in range(SERVING.max_batch_size.bit_length() + 1)})
        for _ in range(SERVING.warmup_rounds):
            for size in sizes:
                x, _, _ = features_for_histories([user] * size, PARAMS.features)
                out = scorer.scores(x)[0]
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
    # Every batched endpoint answers through answer_batch: an item that cannot be answered fails its own request
    # (a 400 naming it), never the other requests of the batch.
    @bentoml.api(batchable=True, max_batch_size=SERVING.max_batch_size, max_latency_ms=SERVING.max_latency_ms)
    def predict_propensity(self, users: UserBatch) -> list[PropensityOut]:
        """Probability that each user purchases within the horizon, from their recent events."""
        compiled = self._require_propensity()
        return answer_batch(users, lambda batch: self._score_propensity(compiled, batch), _user_loc, "predict_propensity")

    def _score_propensity(self, scorer, users: list[UserHistory]) -> list[PropensityOut]:
        x, active, as_ofs = features_for_histories(users, PARAMS.features)
        probs, calibrated = scorer.scores(x)  # the champion's own score and its calibration (calibration.json)
        out = require_finite([
            PropensityOut(user_id=u.user_id, probability=float(p), calibrated_probability=float(c), model=self.propensity_tag, as_of=t, recent_activity=a)
            for u, p, c, a, t in zip(users, probs, calibrated, active, as_ofs)
        ])
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
            raise ServiceUnavailable(_MISSING["recommender"])
        return self.recommender

    def _check_k(self, endpoint: str, k: int) -> None:
        if not 1 <= k <= PARAMS.recommender.k_max:
            raise request_error(endpoint, ("k",), f"k={k} is out of range: ask for 1..{PARAMS.recommender.k_max} items (recommender.k_max in params.yaml)")

    @bentoml.api
    def recommend(self, users: RecommendBatch, k: StrictInt = 10, exclude_purchased: StrictBool | None = None) -> list[RecommendOut]:
        """Top-k next items per user from their recent item ids (one matrix product for the whole request);
        unknown ids are ignored and reported, an empty or unknown history gets the most popular items."""
        from shopsight.recommender import recommend_for_requests

        scorer = self._recommender_or_503()
        self._check_k("recommend", k)

        def answer(batch):
            out = require_finite(recommend_for_requests(scorer, batch, k, exclude_purchased, PARAMS.recommender.k_max, self.recommender_tag))
            self._log("recommend", self.recommender_tag, prediction_records.recommend_records(batch, out))
            return out

        return answer_batch(users, answer, lambda u: ("users", u.user_id or "?"), "recommend").settle()

    @bentoml.api
    def similar_items(self, item_ids: ItemIdBatch, k: StrictInt = 10) -> list[SimilarOut]:
        """Items nearest to each given item in the learned item-embedding space (cosine); unknown ids answer known=false."""
        from shopsight.recommender import similar_for_requests

        scorer = self._recommender_or_503()
        self._check_k("similar_items", k)

        def answer(batch):
            out = require_finite(similar_for_requests(scorer, batch, k, PARAMS.recommender.k_max, self.recommender_tag))
            self._log("similar_items", self.recommender_tag, prediction_records.similar_records(batch, out))
            return out

        return answer_batch(item_ids, answer, lambda i: ("item_ids", i), "similar_items").settle()

    @bentoml.api
    def explain_propensity(self, users: UserBatch) -> list[ExplainedScoreOut]:
        """Calibrated purchase probability per user with its top contributing features (the champion's own attribution:
        integrated gradients for the MLP, tree SHAP for LightGBM, coefficient terms for logistic regression)."""
        from shopsight.explain import explain_requests

        def answer(batch):
            out = require_finite(explain_requests(self._require_propensity(), batch, PARAMS.features, self.propensity_tag, PARAMS.propensity.explain.top_k))
            self._log("explain_propensity", self.propensity_tag, prediction_records.explained_records(out))
            return out

        return answer_batch(users, answer, _user_loc, "explain_propensity").settle()

    @bentoml.api(batchable=True, max_batch_size=SERVING.max_batch_size, max_latency_ms=SERVING.max_latency_ms)
    def churn_risk(self, users: ChurnBatch) -> list[ChurnOut]:
        """Calibrated probability that each user has no activity in the churn horizon; `explain: true` adds reasons."""
        from shopsight.churn import score_churn_requests

        if self.churn is None:
            raise ServiceUnavailable(_MISSING["churn"])

        def answer(batch):
            out = require_finite(score_churn_requests(self.churn, batch, PARAMS, self.churn_horizon, self.churn_tag, PARAMS.churn.explain.top_k))
            self._log("churn_risk", self.churn_tag, prediction_records.churn_records(out))
            return out

        return answer_batch(users, answer, _user_loc, "churn_risk")

    @bentoml.api(batchable=True, max_batch_size=SERVING.max_batch_size, max_latency_ms=SERVING.max_latency_ms)
    def forecast_demand(self, series: DemandBatch) -> list[DemandForecastOut]:
        """Daily units for the next horizon per item or category series, from a given or the stored history."""
        if self.demand is None:
            raise ServiceUnavailable(_MISSING["demand"])

        def answer(batch):
            out = require_finite(self.demand.forecast(batch, self.demand_tag))
            self._log("forecast_demand", self.demand_tag, prediction_records.demand_records(batch, out))
            return out

        return answer_batch(series, answer, lambda s: ("series", s.series_id), "forecast_demand")


def _user_loc(user: UserHistory) -> tuple:
    return ("users", user.user_id)


# Every POST endpoint: API key when $<serving.api_key_env> is set (401), body at most serving.max_body_kb (413);
# then (inner) 503s that say why: no model, still loading, or busy with a Retry-After (a shed request).
ShopsightService.add_asgi_middleware(RequestGuard, max_body_bytes=SERVING.max_body_kb * 1024, api_key_env=SERVING.api_key_env)
ShopsightService.add_asgi_middleware(UnavailableAnswer, retry_after_s=math.ceil(SERVING.max_latency_ms / 1000), unavailable=unavailable_reason)
