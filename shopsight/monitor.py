"""Pipeline drift check: features of the training window (reference) against the latest cutoff (current)."""

from __future__ import annotations

import json
from dataclasses import asdict

import pandas as pd

from monitoring.drift import DriftSummary, build_drift_report
from shopsight import paths
from shopsight.config import Params
from shopsight.features import feature_columns


def pipeline_drift_report(params: Params) -> DriftSummary:
    """Compare the train-split features with the test-cutoff features; write the report and metrics/drift.json."""
    data = pd.read_parquet(paths.PROPENSITY_FEATURES)
    columns = feature_columns(params.features.windows_days)
    summary = build_drift_report(
        data[data["split"] == "train"], data[data["split"] == "test"], paths.PIPELINE_DRIFT_DIR, params.monitoring.drift, columns
    )
    metrics = {k: v for k, v in asdict(summary).items() if k in ("n_columns", "n_drifted", "drift_share", "dataset_drift")}
    paths.DRIFT_METRICS.parent.mkdir(parents=True, exist_ok=True)
    paths.DRIFT_METRICS.write_text(json.dumps(metrics, indent=2))
    return summary
