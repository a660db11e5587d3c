"""One typed object for everything in params.yaml, with clear errors for wrong keys or values."""

from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from shopsight.simulator import SimulatorParams

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PARAMS = Path("params.yaml")

SourceKind = Literal["synthetic", "retailrocket", "rees46", "taobao", "cdnow", "online_retail", "generic", "sequence_text"]


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
    memory_gb: float | None = Field(
        None, gt=0, description="DuckDB's memory for the dedup/sessionise/sort pass (it spills to disk beyond); null = a "
        "quarter of the machine's memory, at least 1 and at most 8 GB"
    )


class FeatureParams(_Section):
    windows_days: list[int] = Field(default_factory=lambda: [7, 28, 84], min_length=1)
    horizon_days: int = Field(14, gt=0, description="label window [T, T + horizon) (the test split's in calibration_holdout)")
    cutoff_step_days: int = Field(7, gt=0)
    n_train_cutoffs: int = Field(4, gt=0)
    n_valid_cutoffs: int = Field(
        1, gt=0, description="validation cutoffs, cutoff_step_days apart (the latest one horizon before test): candidates "
        "are chosen on all of them pooled, so one unusual validation window cannot pick the champion"
    )
    n_test_cutoffs: int = Field(
        1, gt=0, description="test cutoffs, cutoff_step_days apart (a rolling-origin test: the last one ends at the last "
        "whole day, or the first is test_cutoff), pooled in the test report of propensity and churn; validation lies "
        "before the first. More when one test window has too few positives to tell candidates apart"
    )
    history_days: int | None = Field(None, gt=0, description="bound of the full-history (lifetime) features; null = all events")
    split: Literal["rolling", "calibration_holdout"] = Field(
        "rolling", description="rolling: every split's label window is horizon_days; calibration_holdout: train/valid "
        "labels from train_horizon_days windows inside the calibration period, test = [test_cutoff, + horizon_days)"
    )
    test_cutoff: date | None = Field(None, description="explicit test cutoff (a midnight in `timezone`); null = the last that fits")
    train_horizon_days: int | None = Field(None, gt=0, description="train/valid label window of calibration_holdout")
    timezone: str = Field("UTC", description="IANA name: cutoffs are its midnights, day buckets its calendar days")
    data_end: datetime | None = Field(None, description="end of observation (naive = in `timezone`); null = the last event")

    @property
    def lookback_days(self) -> int:
        return max(self.windows_days)

    @property
    def utc_offset_ns(self) -> int:
        """The timezone's (fixed) UTC offset in nanoseconds: local day d = floor((epoch ns + offset) / day)."""
        return _fixed_utc_offset_ns(self.timezone)

    @model_validator(mode="after")
    def _valid_split_and_timezone(self) -> "FeatureParams":
        _fixed_utc_offset_ns(self.timezone)
        if self.split == "calibration_holdout" and self.train_horizon_days is None:
            raise ValueError(
                "features.train_horizon_days is required with features.split=calibration_holdout: the train/valid label "
                "window inside the calibration period (e.g. 91 for 'weeks 1-39 / 40-78' with horizon_days 273)"
            )
        if self.split == "calibration_holdout" and self.n_test_cutoffs > 1:
            raise ValueError(
                f"features.n_test_cutoffs={self.n_test_cutoffs} needs features.split=rolling: calibration_holdout has one "
                "test window, the holdout after the calibration period; set n_test_cutoffs: 1"
            )
        return self


@lru_cache(maxsize=32)
def _fixed_utc_offset_ns(name: str) -> int:
    """UTC offset of an IANA timezone without daylight saving time (one offset in 2000-2040), else a ValueError.

    feature_sql's day plan needs cutoffs that share one UTC time of day, which a DST zone's midnights do not.
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"features.timezone={name!r} is not an IANA timezone name (e.g. UTC, Asia/Shanghai, Etc/GMT-1)") from exc
    offsets = {zone.utcoffset(datetime(year, month, 1)) for year in range(2000, 2041) for month in (1, 4, 7, 10)}
    if len(offsets) > 1:
        raise ValueError(
            f"features.timezone={name!r} changes its UTC offset (daylight saving time): cutoffs must share one UTC time "
            "of day. Use a fixed-offset zone for its standard time instead (e.g. Etc/GMT-1 for UTC+1, Etc/GMT+5 for UTC-5)"
        )
    return int(offsets.pop().total_seconds()) * 1_000_000_000


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


class ExplainParams(_Section):
    ig_steps: int = Field(32, ge=2, description="integrated-gradients path steps (Riemann trapezoid)")
    top_k: int = Field(3, gt=0, description="top contributing features returned per prediction")
    global_sample: int = Field(2000, gt=0, description="test rows averaged for the global importance plot")


class BGNBDFitParams(_Section):
    time_unit_days: float = Field(7.0, gt=0, description="BG/NBD (Pareto/NBD) time unit (weeks, as in the papers)")
    penalizer: float = Field(0.001, ge=0, description="L2 penalty on the parameters (lifetimes convention); keeps the fit off the a -> 0 boundary")


class RuleParams(_Section):
    """A ranking rule: one feature, one direction (shopsight/candidates/rules.py)."""

    column: str = Field(description="a feature name from feature_columns()")
    sign: Literal[1, -1] = Field(1, description="+1: a larger value scores higher; -1: a smaller one")


class StackedParams(_Section):
    """A learned candidate with other candidates' scores as extra inputs (shopsight/candidates/stacked.py)."""

    base: Literal["logistic_regression", "lightgbm", "mlp"] = Field(description="the learned family, with its own settings of this task")
    inputs: list[str] = Field(min_length=1, description="candidates listed before it whose scores it takes (e.g. bgnbd)")


class SelectionParams(_Section):
    """How the champion is chosen on validation."""

    rule: Literal["beat_reference", "best", "one_se"] = Field(
        "beat_reference", description="beat_reference: the best on validation ROC-AUC if it is a reference or leads the "
        "best reference there by more than k_se paired-bootstrap standard errors, else that reference (a learned model "
        "must beat the strongest simple reference beyond the validation noise to be served) | best: the highest "
        "validation ROC-AUC | one_se: the first candidate (simplest first) within k_se paired-bootstrap standard errors "
        "of the best (Breiman et al. 1984): small validation sets do not crown noise")
    n_boot: int = Field(200, ge=20, description="bootstrap resamples of the validation rows for the standard error")
    k_se: float = Field(1.0, gt=0, description="standard errors of the validation gap: how far a learned candidate must "
                        "lead the best reference (beat_reference), or a simpler candidate may trail the best (one_se)")
    seed: int = 0
    early_stopping: Literal["train_users", "valid"] = Field(
        "train_users", description="where LightGBM and the MLP stop early: train_users = a share of the training users "
        "held out (the validation rows that choose the champion stay unseen by every candidate) | valid = the validation "
        "rows (their validation score is then optimistic against the candidates that never saw them)")
    early_stopping_share: float = Field(0.2, gt=0, lt=1, description="share of training users held out for early stopping")
    refit: bool = Field(
        True, description="after the choice, fit every candidate again on train + validation with what validation chose "
        "(LightGBM rounds, MLP epochs): test scores and the served champion then use the latest labels before the test cutoff")


class UserTaskParams(_Section):
    """What a user-level binary task (propensity, churn) trains, selects on validation and reports on test."""

    candidates: list[str] = Field(
        min_length=1,
        description="candidate names, simplest first (a tie on validation goes to the earlier): a rule name from `rules`, "
        "bgnbd, paretonbd, logistic_regression, lightgbm, mlp, blend, or a name under `stacked`",
    )
    references: list[str] = Field(default_factory=list, description="simple references the champion must beat on test (targets)")
    target_margin: float = Field(0.01, ge=0, description="ROC-AUC the champion must beat the best reference by for the target to be met")
    rules: dict[str, RuleParams] = Field(default_factory=dict)
    blend: list[str] = Field(default_factory=list, description="members of the `blend` candidate (listed before it in candidates)")
    stacked: dict[str, StackedParams] = Field(
        default_factory=dict, description="name -> a learned family taking other candidates' scores (e.g. BG/NBD's) as inputs")
    mlp: MLPParams = Field(default_factory=MLPParams)
    logistic: LogisticParams = Field(default_factory=LogisticParams)
    lightgbm: dict[str, Any] = Field(default_factory=dict, description="LightGBM parameters over shopsight/candidates/gbdt.py DEFAULTS")
    bgnbd: BGNBDFitParams = Field(default_factory=BGNBDFitParams)
    paretonbd: BGNBDFitParams = Field(default_factory=BGNBDFitParams, description="Pareto/NBD: the same settings as bgnbd")
    calibration: CalibrationParams = Field(default_factory=CalibrationParams)
    explain: ExplainParams = Field(default_factory=ExplainParams)
    selection: SelectionParams = Field(default_factory=SelectionParams)

    @model_validator(mode="after")
    def _known_candidates(self) -> "UserTaskParams":
        known = {"bgnbd", "paretonbd", "logistic_regression", "lightgbm", "mlp", "blend", *self.rules, *self.stacked}
        unknown = [c for c in [*self.candidates, *self.references] if c not in known]
        if unknown:
            raise ValueError(f"unknown candidate(s) {unknown}: use a rule defined under `rules`, a name under `stacked` or one of "
                             "bgnbd, paretonbd, logistic_regression, lightgbm, mlp, blend")
        clash = sorted(set(self.stacked) & {"bgnbd", "paretonbd", "logistic_regression", "lightgbm", "mlp", "blend", *self.rules})
        if clash:
            raise ValueError(f"stacked candidate name(s) {clash} are taken by another candidate: choose other names")
        for name, stack in self.stacked.items():
            if name in self.candidates:
                before = self.candidates[: self.candidates.index(name)]
                late = [i for i in stack.inputs if i not in before]
                if late:
                    raise ValueError(f"stacked.{name}.inputs {late} must be candidates listed before {name!r} in candidates {self.candidates}")
        if "blend" in self.candidates:
            before = self.candidates[: self.candidates.index("blend")]
            if len(self.blend) < 2 or any(m not in before for m in self.blend):
                raise ValueError(f"blend members {self.blend} must be two or more candidates listed before `blend` in candidates {self.candidates}")
        missing = [r for r in self.references if r not in self.candidates]
        if missing:
            raise ValueError(f"reference(s) {missing} must also be listed in `candidates` (they are fitted and scored with them)")
        return self


def _default_propensity_rules() -> dict[str, RuleParams]:
    return {"frequency": RuleParams(column="purchase_days_total", sign=1), "recency": RuleParams(column="recency_days", sign=-1)}


class PropensityParams(UserTaskParams):
    candidates: list[str] = Field(default_factory=lambda: ["frequency", "recency", "bgnbd", "paretonbd", "logistic_regression", "lightgbm", "mlp", "blend"], min_length=1)
    references: list[str] = Field(default_factory=lambda: ["frequency", "recency", "bgnbd", "paretonbd"])
    blend: list[str] = Field(default_factory=lambda: ["logistic_regression", "lightgbm", "mlp"])
    rules: dict[str, RuleParams] = Field(default_factory=_default_propensity_rules)


def _default_churn_rules() -> dict[str, RuleParams]:
    return {"recency": RuleParams(column="recency_days", sign=1), "frequency": RuleParams(column="active_days_total", sign=-1)}


class ChurnParams(UserTaskParams):
    """Churn warning: users active in the look-back window who have no activity in [T, T + horizon)."""

    horizon_days: int = Field(14, gt=0, description="inactivity window after the cutoff that counts as churn")
    candidates: list[str] = Field(default_factory=lambda: ["recency", "frequency", "bgnbd", "paretonbd", "logistic_regression", "lightgbm", "mlp", "blend"], min_length=1)
    references: list[str] = Field(default_factory=lambda: ["recency", "frequency", "bgnbd", "paretonbd"])
    blend: list[str] = Field(default_factory=lambda: ["logistic_regression", "lightgbm", "mlp"])
    rules: dict[str, RuleParams] = Field(default_factory=_default_churn_rules)


class DemandModelParams(_Section):
    """The Keras family (candidates "cnn" and "lstm": the candidate name picks the architecture)."""

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


class DemandStatsforecastParams(_Section):
    """The statsforecast family: candidates sf_seasonal_naive, auto_ets, croston, adida, imapa."""

    history_days: int = Field(364, gt=0, description="most recent days each series is fitted on (fit cost grows with it)")
    croston: Literal["optimized", "classic"] = "optimized"


class DemandChoiceParams(_Section):
    """The per-series choice (candidate best_per_series): each series gets the member with the lowest absolute
    error over `select_windows` windows before the validation window."""

    members: list[str] = Field(default_factory=lambda: ["moving_median", "seasonal_naive", "moving_average", "croston", "adida", "imapa"],
                               min_length=1, description="rule and statsforecast candidates (no fitting needed), simplest first")
    select_windows: int = Field(4, ge=1, description="horizon-long windows ending at the validation origin, to choose on")
    weekday_profile: bool = Field(True, description="also offer each member reshaped by the pooled day-of-week profile")
    profile_weeks: int = Field(12, gt=0, description="weeks the day-of-week profile is estimated on")


class DemandSelectionParams(_Section):
    """How the demand champion is chosen on validation item WAPE."""

    rule: Literal["beat_reference", "best"] = Field(
        "beat_reference", description="beat_reference: the lowest validation item WAPE if it is a reference or beats the "
        "best reference there by more than k_se standard errors of the difference (a paired bootstrap over item series), "
        "else that reference | best: the lowest validation item WAPE")
    k_se: float = Field(1.0, gt=0, description="standard errors of the WAPE difference a non-reference champion must clear")
    n_boot: int = Field(200, ge=20, description="bootstrap resamples of the validation item series")
    seed: int = 0


class DemandParams(_Section):
    """Demand forecast: daily units per item and per category for the next `horizon_days`."""

    horizon_days: int = Field(14, gt=0)
    input_days: int = Field(28, gt=0, description="days of history in each sliding window")
    window_step_days: int = Field(1, gt=0, description="stride between training windows")
    season_days: int = Field(7, gt=0, description="seasonal-naive period and the MASE scale lag")
    moving_average_days: int = Field(28, gt=0)
    min_train_units: float = Field(1.0, ge=0, description="item series with fewer units before the validation window are left out of training")
    plot_top_categories: int = Field(4, gt=0)
    moving_median_days: int = Field(28, gt=0)
    serving_history_days: int = Field(112, gt=0, description="days of recent history stored per series for the service")
    candidates: list[str] = Field(
        default_factory=lambda: ["seasonal_naive", "moving_average", "moving_median", "sf_seasonal_naive", "croston", "adida",
                                 "imapa", "auto_ets", "best_per_series", "cnn"],
        min_length=1, description="candidates fitted and compared on validation, simplest first (ties go to the first)")
    references: list[str] = Field(
        default_factory=lambda: ["seasonal_naive", "moving_average", "sf_seasonal_naive", "croston", "adida", "imapa", "auto_ets"],
        description="the baselines the champion must beat on test (targets)")
    selection: DemandSelectionParams = Field(default_factory=DemandSelectionParams)
    model: DemandModelParams = Field(default_factory=DemandModelParams)
    statsforecast: DemandStatsforecastParams = Field(default_factory=lambda: DemandStatsforecastParams())
    per_series_choice: DemandChoiceParams = Field(default_factory=lambda: DemandChoiceParams())


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


def _check_dropout(value):
    if value != "auto" and not 0 <= value < 1:
        raise ValueError(f"dropout must be in [0, 1) or 'auto', got {value!r}")
    return value


DropoutOrAuto = Annotated[float | Literal["auto"], AfterValidator(_check_dropout)]
SizeOrAuto = Annotated[int, Field(gt=0)] | Literal["auto"]


class TransformerParams(_Section):
    depth: int = Field(2, ge=1, description="self-attention blocks")
    heads: int = Field(2, ge=1)
    width: SizeOrAuto = Field("auto", description="feed-forward width inside each block; auto: twice embedding_dim")
    dropout: DropoutOrAuto = Field(
        "auto", description="embedding and block dropout; auto: 0.5 on sparse data, 0.1 on dense (recommender.sparse_targets_per_item)"
    )


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
    embedding_dim: SizeOrAuto = Field(
        "auto", description="item embeddings shared by input and output; auto: 128 on sparse data, 64 on dense (sparse_targets_per_item)"
    )
    rnn_units: int = Field(64, gt=0, description="GRU/LSTM state size")
    transformer: TransformerParams = Field(default_factory=TransformerParams)
    cnn: CNNParams = Field(default_factory=CNNParams)
    loss: Literal["full", "sampled", "in_batch"] = Field(
        "full", description="full softmax over the catalogue | sampled softmax (unigram sampler) | in-batch negatives; both with logQ correction"
    )
    num_sampled: int = Field(256, gt=0, description="negatives per batch for loss=sampled")
    epochs: int = Field(30, gt=0, description="upper bound: patience and max_train_seconds stop first")
    patience: int = Field(3, ge=1, description="early stopping on validation NDCG@10")
    batch_size: int = Field(128, gt=0, description="sequences per step")
    learning_rate: float = Field(3e-3, gt=0)
    dropout: DropoutOrAuto = Field(
        "auto", description="GRU/LSTM embedding dropout; auto: 0.5 on sparse data, 0.2 on dense (sparse_targets_per_item)"
    )
    sparse_targets_per_item: float = Field(
        100.0, gt=0, description="the auto settings: data with fewer training targets per catalogue item than this is sparse "
        "(SASRec's choice: 0.5 on the sparse Amazon and Steam sets, 0.2 on MovieLens-1M)",
    )
    exclude_purchased: bool = Field(False, description="rank without the items the user already bought (evaluation and service default)")
    xla: bool = Field(False, description="jit-compile the training step")
    k_max: int = Field(50, ge=20, description="HR@K curve for K=1..k_max; also the largest k /recommend accepts")
    popularity_window_days: int = Field(7, gt=0, description="most-popular baseline counts events in this window before the cutoff")
    max_eval_users: int | None = Field(None, gt=0, description="validation users scored per epoch (null = all)")
    seed: int = 13
    protocol: Literal["time", "leave_one_out"] = Field(
        "time", description="time: the platform's cutoffs | leave_one_out: each user's last item test, second to last "
        "validation, the rest training; the user's earlier items are never recommended (the papers' protocol)",
    )
    build_shards: SizeOrAuto = Field(
        "auto", description="protocol time: build the sequences in this many user-hash shards one after another in one process "
        "(the events of one shard in memory at a time, the same arrays); auto: as many as 60% of the machine's memory needs "
        "(one pass up to ~106M events on 24 GiB)",
    )
    sampler: Literal["uniform", "unigram"] = Field(
        "uniform", description="negatives of loss=sampled: uniform over the catalogue (gSASRec / eSASRec) or unigram with logQ",
    )
    max_train_seconds: float | None = Field(1380.0, gt=0, description="per model: stop after the epoch that passes this (null = no limit)")
    baselines_compete: bool = Field(True, description="popularity and co-occurrence may be the champion when they win on validation")


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
    partition: bool = Field(
        False, description="fan the user-partitioned stages (features, sequences, audiences scoring) out over Dask by user-hash shards"
    )
    shards: int = Field(0, ge=0, description="user-hash shards when partition is on; 0 = one per worker")
    shard_dir: str | None = Field(None, description="where the shards are written (visible to every worker); null = a temporary folder")


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


def deep_update(base: dict, update: dict) -> dict:
    """Merge `update` into the raw params mapping `base` in place, section by section (nested dicts merged, other
    values replaced), and return it."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


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
