"""Where each pipeline step reads and writes, relative to the project root (DVC runs stages there)."""

from pathlib import Path

DATA_DIR = Path("data")
RAW_DIR = DATA_DIR / "raw"
SYNTHETIC_DIR = RAW_DIR / "synthetic"
TRUTH_DIR = DATA_DIR / "truth"
STAGING_EVENTS = DATA_DIR / "staging" / "valid.parquet"
EVENTS = DATA_DIR / "events.parquet"
REJECTS = DATA_DIR / "rejects.parquet"
FEATURES_DIR = DATA_DIR / "features"
PROPENSITY_FEATURES = FEATURES_DIR / "propensity.parquet"

ARTIFACTS_DIR = Path("artifacts")
PROPENSITY_DIR = ARTIFACTS_DIR / "propensity"

METRICS_DIR = Path("metrics")
INGEST_REPORT = METRICS_DIR / "ingest.json"
PROPENSITY_METRICS = METRICS_DIR / "propensity.json"
DRIFT_METRICS = METRICS_DIR / "drift.json"

PLOTS_DIR = Path("plots")
PROPENSITY_PLOTS = PLOTS_DIR / "propensity"

REPORTS_DIR = Path("monitoring") / "reports"
PIPELINE_DRIFT_DIR = REPORTS_DIR / "pipeline"

# Full per-task tables written by the evaluate stages (result files, not DVC metrics) and the headline read from them.
CHURN_METRICS = METRICS_DIR / "churn.json"
DEMAND_METRICS = METRICS_DIR / "demand.json"
RECOMMENDER_METRICS = METRICS_DIR / "recommender.json"
HEADLINE_METRICS = METRICS_DIR / "headline.json"  # the DVC metrics: numbers a reviewer compares across runs
HEADLINE_MODELS = METRICS_DIR / "headline_models.json"  # the model and baseline names behind those numbers
