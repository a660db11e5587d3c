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


class PropensityParams(_Section):
    mlp: MLPParams = Field(default_factory=MLPParams)
    baseline: LogisticParams = Field(default_factory=LogisticParams)


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


class MonitoringParams(_Section):
    drift: DriftParams = Field(default_factory=DriftParams)


class ServingParams(_Section):
    max_users_per_request: int = Field(1000, gt=0)
    max_events_per_user: int = Field(2000, gt=0)
    max_batch_size: int = Field(256, gt=0)
    max_latency_ms: int = Field(1000, gt=0)


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
