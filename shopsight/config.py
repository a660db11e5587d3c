"""One typed object for everything in params.yaml, with clear errors for wrong keys or values."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shopsight.simulator import SimulatorParams

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PARAMS = Path("params.yaml")

SourceKind = Literal["synthetic", "retailrocket", "rees46", "taobao", "cdnow", "online_retail", "generic"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataParams(_Section):
    source: SourceKind = "synthetic"
    path: str | list[str] | None = Field(None, description="file, list of files or glob of a file source")
    options: dict[str, Any] = Field(default_factory=dict, description="source-specific options")
    chunksize: int = Field(1_000_000, gt=0)
    synthetic: SimulatorParams = Field(default_factory=SimulatorParams)

    @model_validator(mode="after")
    def _file_source_needs_path(self) -> "DataParams":
        if self.source != "synthetic" and not self.path:
            raise ValueError(f"data.path is required for data.source={self.source!r}: point it at the downloaded file(s)")
        return self


class IngestParams(_Section):
    min_timestamp: str = "1990-01-01"
    max_timestamp: str = "2100-01-01"
    drop_duplicates: bool = True
    session_gap_minutes: int = Field(30, gt=0)
    pseudonymise_salt_env: str | None = Field(
        None, description="name of an environment variable holding a salt; when set, user ids are salted-hashed"
    )


class FeatureParams(_Section):
    windows_days: list[int] = Field(default_factory=lambda: [7, 28, 84], min_length=1)
    horizon_days: int = Field(14, gt=0, description="label window [T, T + horizon)")
    cutoff_step_days: int = Field(7, gt=0)
    n_train_cutoffs: int = Field(4, gt=0)

    @property
    def lookback_days(self) -> int:
        return max(self.windows_days)


class MLPParams(_Section):
    hidden_units: list[int] = Field(default_factory=lambda: [64, 32], min_length=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(256, gt=0)
    epochs: int = Field(30, gt=0)
    patience: int = Field(4, ge=1)
    class_weight: Literal["balanced", "none"] = "balanced"
    seed: int = 7


class LogisticParams(_Section):
    C: float = Field(1.0, gt=0)
    max_iter: int = Field(2000, gt=0)


class CalibrationParams(_Section):
    method: Literal["platt", "isotonic", "none"] = Field(
        "platt", description="fit on the validation cutoff: platt (logit scale + bias) | isotonic | none"
    )
    n_bins: int = Field(10, ge=2, description="equal-width bins of the reliability plot and the ECE")


class GBTParams(_Section):
    """sklearn HistGradientBoostingClassifier (baseline)."""

    max_iter: int = Field(200, gt=0)
    learning_rate: float = Field(0.05, gt=0)
    max_leaf_nodes: int = Field(31, ge=2)
    min_samples_leaf: int = Field(40, gt=0)
    l2_regularization: float = Field(1.0, ge=0)
    class_weight: Literal["balanced", "none"] = "balanced"
    seed: int = 0


class ExplainParams(_Section):
    ig_steps: int = Field(32, ge=2, description="integrated-gradients path steps (Riemann trapezoid)")
    top_k: int = Field(3, gt=0, description="top contributing features returned per prediction")
    global_sample: int = Field(2000, gt=0, description="test rows averaged for the global importance plot")


class PropensityParams(_Section):
    mlp: MLPParams = Field(default_factory=MLPParams)
    baseline: LogisticParams = Field(default_factory=LogisticParams)
    gbt: GBTParams = Field(default_factory=GBTParams)
    calibration: CalibrationParams = Field(default_factory=CalibrationParams)
    explain: ExplainParams = Field(default_factory=ExplainParams)


class BGNBDFitParams(_Section):
    time_unit_days: float = Field(7.0, gt=0, description="BG/NBD time unit (weeks, as in the paper)")
    penalizer: float = Field(0.001, ge=0, description="L2 penalty on the parameters (lifetimes convention); keeps the fit off the a -> 0 boundary")


class ChurnParams(_Section):
    """Churn warning: users active in the look-back window who have no activity in [T, T + horizon)."""

    horizon_days: int = Field(14, gt=0, description="inactivity window after the cutoff that counts as churn")
    mlp: MLPParams = Field(default_factory=MLPParams)
    calibration: CalibrationParams = Field(default_factory=CalibrationParams)
    bgnbd: BGNBDFitParams = Field(default_factory=BGNBDFitParams)
    explain: ExplainParams = Field(default_factory=ExplainParams)


class DemandModelParams(_Section):
    architecture: Literal["cnn", "lstm"] = "cnn"
    loss: Literal["poisson", "mse", "mae"] = Field("poisson", description="poisson/mse forecast the mean; mae the median (zero for sparse items)")
    filters: int = Field(32, gt=0, description="Conv1D filters (cnn) or LSTM units (lstm)")
    kernel_size: int = Field(7, gt=0)
    hidden_units: int = Field(64, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    learning_rate: float = Field(2e-3, gt=0)
    batch_size: int = Field(256, gt=0)
    epochs: int = Field(30, gt=0)
    patience: int = Field(4, ge=1)
    seed: int = 7
    residual: bool = Field(True, description="learn a multiplicative correction of the input window's mean (the moving average)")


class DemandParams(_Section):
    """Demand forecast: daily units per item and per category for the next `horizon_days`."""

    horizon_days: int = Field(14, gt=0)
    input_days: int = Field(28, gt=0, description="days of history in each sliding window")
    window_step_days: int = Field(1, gt=0, description="stride between training windows")
    season_days: int = Field(7, gt=0, description="seasonal-naive period and the MASE scale lag")
    moving_average_days: int = Field(28, gt=0)
    min_train_units: float = Field(1.0, ge=0, description="item series with fewer units before the validation window are left out of training")
    plot_top_categories: int = Field(4, gt=0)
    model: DemandModelParams = Field(default_factory=DemandModelParams)


class AudienceParams(_Section):
    """Campaign audiences written by `shopsight audiences` from the champion models."""

    out_dir: str = "audiences"
    chunk_users: int = Field(5000, gt=0, description="users scored per chunk (memory stays bounded)")
    propensity_top_percent: float = Field(10.0, gt=0, le=100, description="top N% by purchase propensity ...")
    exclude_recent_buyers: bool = Field(True, description="... among users without a purchase in the look-back window")
    high_value_quantile: float = Field(0.8, ge=0, lt=1, description="high value = look-back revenue at or above this quantile of buyers")
    churn_min_probability: float = Field(0.5, ge=0, le=1, description="at risk = churn probability at or above this")
    top_reasons: int = Field(3, gt=0)


RecommenderModel = Literal["gru", "lstm", "cnn", "transformer"]


class TransformerParams(_Section):
    depth: int = Field(2, ge=1, description="self-attention blocks")
    heads: int = Field(2, ge=1)
    width: int = Field(128, gt=0, description="feed-forward width inside each block")
    dropout: float = Field(0.1, ge=0, lt=1)


class CNNParams(_Section):
    window: int = Field(5, ge=1, description="recent items each position sees (Caser's L)")
    horizontal_filters: int = Field(16, gt=0, description="filters per height 1..window")
    vertical_filters: int = Field(4, gt=0)
    dropout: float = Field(0.2, ge=0, lt=1)


class RecommenderParams(_Section):
    models: list[RecommenderModel] = Field(default_factory=lambda: ["gru", "cnn", "transformer"], min_length=1)
    event_types: list[Literal["view", "cart", "remove_from_cart", "favorite", "purchase"]] = Field(
        default_factory=lambda: ["view", "cart", "favorite", "purchase"], min_length=1,
        description="events that make up a sequence (consecutive repeats of one item collapse)",
    )
    max_len: int = Field(50, ge=2, description="most recent items a model sees")
    embedding_dim: int = Field(64, gt=0)
    rnn_units: int = Field(64, gt=0, description="GRU/LSTM state size")
    transformer: TransformerParams = Field(default_factory=TransformerParams)
    cnn: CNNParams = Field(default_factory=CNNParams)
    loss: Literal["full", "sampled", "in_batch"] = Field(
        "full", description="full softmax over the catalogue | sampled softmax (unigram sampler) | in-batch negatives; both with logQ correction"
    )
    num_sampled: int = Field(256, gt=0, description="negatives per batch for loss=sampled")
    epochs: int = Field(6, gt=0)
    patience: int = Field(2, ge=1, description="early stopping on validation NDCG@10")
    batch_size: int = Field(128, gt=0, description="sequences per step")
    learning_rate: float = Field(2e-3, gt=0)
    dropout: float = Field(0.2, ge=0, lt=1, description="embedding dropout")
    exclude_purchased: bool = Field(False, description="rank without the items the user already bought (evaluation and service default)")
    xla: bool = Field(False, description="jit-compile the training step")
    k_max: int = Field(50, ge=20, description="HR@K curve for K=1..k_max; also the largest k /recommend accepts")
    popularity_window_days: int = Field(7, gt=0, description="most-popular baseline counts events in this window before the cutoff")
    max_eval_users: int | None = Field(None, gt=0, description="validation users scored per epoch (null = all)")
    seed: int = 13


class GateParams(_Section):
    metric: str = "roc_auc"
    min_improvement: float = Field(0.0, description="challenger must beat the champion by at least this much")
    max_regression: float | None = Field(
        0.02, ge=0, description="no other test metric may get worse by more than this (absolute); null = not enforced"
    )
    guard_metrics: list[str] | None = Field(None, description="metrics that may not regress; null = every other metric both report")
    lower_is_better: list[str] = Field(
        default_factory=lambda: ["log_loss", "brier", "ece", "wape", "mase", "mae", "rmse"],
        description="metrics where a decrease is an improvement",
    )


class RegistryParams(_Section):
    gate: GateParams = Field(default_factory=GateParams)
    tasks: dict[str, GateParams] = Field(default_factory=dict, description="per-task gate (replaces `gate` for that task)")

    def gate_for(self, task: str) -> GateParams:
        return self.tasks.get(task, self.gate)


class DriftParams(_Section):
    stattest: str | None = Field(None, description="Evidently stat test for every column; null = Evidently's per-type default")
    stattest_threshold: float | None = None
    drift_share: float = Field(0.3, gt=0, le=1, description="share of drifted columns that counts as dataset drift")
    max_rows: int = Field(50_000, gt=0, description="rows sampled per side for the report")


class StatTestParams(_Section):
    stattest: str = Field(description="Evidently stat test name, e.g. wasserstein (normed), jensenshannon, psi, ks")
    threshold: float = Field(gt=0, description="distance at or above it (or p-value below it) = drifted")


class DriftPolicyParams(_Section):
    """When a weekly report starts a retrain (monitoring/policy.py); tuned by bench/bench_drift_policy.py."""

    features: list[str] | None = Field(None, description="model features counted in the drift share; null = all")
    exclude: list[str] = Field(
        default_factory=lambda: ["first_seen_days"], description="features never counted (tenure grows with the shop's age)"
    )
    numerical: StatTestParams = Field(default_factory=lambda: StatTestParams(stattest="wasserstein", threshold=0.1))
    categorical: StatTestParams = Field(default_factory=lambda: StatTestParams(stattest="jensenshannon", threshold=0.1))
    per_column: dict[str, StatTestParams] = Field(default_factory=dict, description="column -> test replacing the per-type one")
    drift_share: float = Field(0.3, gt=0, le=1, description="share of counted features drifted that triggers")
    critical: list[str] = Field(
        default_factory=lambda: ["event_category", "event_price_change"],
        description="event columns of which one drifted column alone triggers",
    )
    reference_event_days: int = Field(28, gt=0, description="events before the champion's last training cutoff used as event reference")
    price_change_tolerance: float = Field(0.05, ge=0, description="relative rise above the item's reference list price counted as a price change")
    min_rows: int = Field(200, gt=0, description="fewer rows on either side: the source is reported but does not decide")
    max_rows: int = Field(50_000, gt=0, description="rows sampled per side and source (uniform, seeded)")
    quality_drop: float = Field(0.05, gt=0, description="ROC-AUC this far below the champion's test ROC-AUC triggers")
    min_outcomes: int = Field(200, gt=0, description="matured predictions needed before quality can trigger")
    ranking_k: int = Field(10, gt=0, description="NDCG@k / HR@k of the logged /recommend answers in the weekly report")
    cooldown_days: float = Field(7.0, ge=0, description="no second retrain trigger within this many days of the last")


class MonitoringParams(_Section):
    drift: DriftParams = Field(default_factory=DriftParams)
    policy: DriftPolicyParams = Field(default_factory=DriftPolicyParams)


class PredictionLogParams(_Section):
    enabled: bool = True
    dir: str = Field("monitoring/predictions", description="JSON Lines files, rotated by hour and size ($SHOPSIGHT_PREDICTION_LOG_DIR wins)")
    rotate_mb: int = Field(64, gt=0, description="start a new file past this size")
    pseudonymise_salt_env: str | None = Field(
        None, description="environment variable holding the salt for logged user ids; null = ingest.pseudonymise_salt_env"
    )


class ServingParams(_Section):
    max_users_per_request: int = Field(1000, gt=0)
    max_events_per_user: int = Field(2000, gt=0)
    max_batch_size: int = Field(256, gt=0)
    max_latency_ms: int = Field(1000, gt=0)
    host: str = Field("127.0.0.1", description="bind address of `bentoml serve` (0.0.0.0 only behind a gateway or in a container)")
    api_key_env: str | None = Field(
        "SHOPSIGHT_API_KEY", description="environment variable holding the API key; when it is set, every POST endpoint needs it"
    )
    max_body_kb: int = Field(4096, gt=0, description="larger request bodies get 413")
    timeout_s: float = Field(30.0, gt=0, description="a request running longer gets 504")
    warmup_rounds: int = Field(3, gt=0, description="compiled calls per batch size (1, 2, 4 .. max_batch_size) before ready")
    prediction_log: PredictionLogParams = Field(default_factory=PredictionLogParams)


class DaskParams(_Section):
    address: str | None = Field(None, description="scheduler of an existing Dask cluster; null = a LocalCluster (env SHOPSIGHT_DASK_ADDRESS wins)")
    n_workers: int = Field(2, gt=0, description="LocalCluster workers")
    threads_per_worker: int = Field(1, gt=0)


class OrchestrationParams(_Section):
    retrain_cron: str = Field("0 3 * * 1", description="weekly retraining deployment (cron, in `timezone`)")
    monitoring_cron: str = Field("0 6 * * 1", description="weekly monitoring deployment")
    timezone: str = "UTC"
    stage_retries: int = Field(2, ge=0, description="retries of a failed DVC stage (transient failures)")
    stage_retry_delay_seconds: float = Field(10.0, ge=0)
    build_bento: bool = Field(True, description="build the bento when a champion changed")
    dask: DaskParams = Field(default_factory=DaskParams)
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict, description="hyperparameter grid for flows/sweep.py: dotted params key -> values"
    )


class TrainingParams(_Section):
    distribute: Literal["none", "mirrored", "multi_worker"] = Field(
        "none", description="tf.distribute strategy: none | mirrored (GPUs of one host) | multi_worker (TF_CONFIG)"
    )


class Params(_Section):
    data: DataParams = Field(default_factory=DataParams)
    ingest: IngestParams = Field(default_factory=IngestParams)
    features: FeatureParams = Field(default_factory=FeatureParams)
    propensity: PropensityParams = Field(default_factory=PropensityParams)
    churn: ChurnParams = Field(default_factory=ChurnParams)
    demand: DemandParams = Field(default_factory=DemandParams)
    audiences: AudienceParams = Field(default_factory=AudienceParams)
    recommender: RecommenderParams = Field(default_factory=RecommenderParams)
    registry: RegistryParams = Field(default_factory=RegistryParams)
    monitoring: MonitoringParams = Field(default_factory=MonitoringParams)
    serving: ServingParams = Field(default_factory=ServingParams)
    orchestration: OrchestrationParams = Field(default_factory=OrchestrationParams)
    training: TrainingParams = Field(default_factory=TrainingParams)


class ConfigError(ValueError):
    """params.yaml is missing, unreadable or has a wrong key or value."""


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Read and validate params.yaml; raise ConfigError naming the file, the key and what is wrong."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: not found; run from the project root or pass --params PATH")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from exc
