"""The tasks, each one shape (a dataset builder, candidates of any family, selection on validation, a test
report of every candidate, the champion registered and served). `USER_TASKS` are the user-level binary tasks;
`REGISTRATIONS` lists every task's registration function for the training flow."""

from __future__ import annotations

from shopsight import paths
from shopsight.tasks.user_binary import UserTask

PROPENSITY = UserTask(
    name="propensity",
    dataset=paths.PROPENSITY_FEATURES,
    model_dir=paths.PROPENSITY_DIR,
    metrics=paths.PROPENSITY_METRICS,
    plots=paths.PROPENSITY_PLOTS,
    section=lambda p: p.propensity,
    horizon=lambda p: p.features.horizon_days,
    truth=("truth_purchase.parquet", "p_purchase", "horizon_days"),
    label="buys within the horizon",
    bgnbd={"events": "purchase", "score": "buy"},
)

CHURN = UserTask(
    name="churn",
    dataset=paths.FEATURES_DIR / "churn.parquet",
    model_dir=paths.ARTIFACTS_DIR / "churn",
    metrics=paths.METRICS_DIR / "churn.json",
    plots=paths.PLOTS_DIR / "churn",
    section=lambda p: p.churn,
    horizon=lambda p: p.churn.horizon_days,
    truth=("truth_churn.parquet", "p_churn", "churn_horizon_days"),
    label="no activity within the horizon",
    bgnbd={"events": "activity", "score": "no_activity"},
)

USER_TASKS: dict[str, UserTask] = {t.name: t for t in (PROPENSITY, CHURN)}

# Every task's registration (module:function taking Params): the training flow iterates over these.
REGISTRATIONS: list[tuple[str, str]] = [
    ("propensity", "shopsight.pipeline:register_propensity"),
    ("recommender", "shopsight.recommender:register_recommender"),
    ("churn", "shopsight.churn:register_churn"),
    ("demand", "shopsight.demand:register_demand"),
]
