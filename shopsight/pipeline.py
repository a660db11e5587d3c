"""The pipeline steps as plain functions: the CLI, DVC stages and Prefect tasks all call these."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shopsight import paths
from shopsight.config import Params


def run_features(params: Params) -> dict[str, Any]:
    """events.parquet -> data/features/propensity.parquet (user x cutoff rows with label and split)."""
    from shopsight.features import build_propensity_dataset

    dataset = build_propensity_dataset(paths.EVENTS, params.features)
    paths.FEATURES_DIR.mkdir(parents=True, exist_ok=True)
    dataset.to_parquet(paths.PROPENSITY_FEATURES, index=False)
    summary = dataset.groupby("split")["label"].agg(["size", "mean"]).round(4)
    return {split: {"rows": int(r["size"]), "positive_rate": float(r["mean"])} for split, r in summary.iterrows()}


def register_user_classifier(task: str, params: Params, model_dir: Path, metrics_path: Path, features_path: Path, task_params: dict):
    """Register a user-level classifier (its "mlp" entry in the test metrics) with lineage and its drift reference
    (the training-split features it was fit on, stored with the model); the task's gate decides champion."""
    import pandas as pd

    from shopsight.features import feature_columns
    from shopsight.registry import register_model

    gate = params.registry.gate_for(task)
    features = pd.read_parquet(features_path)
    reference = features.loc[features["split"] == "train", ["cutoff", "user_id", *feature_columns(params.features.windows_days)]]
    return register_model(
        task,
        model_dir,
        json.loads(metrics_path.read_text()),
        {**task_params, "features": params.features.model_dump()},
        main_metric=gate.metric,
        model_key="mlp",
        gate=gate,
        reference=reference,
        lineage={"reference_features": str(features_path), "reference_split": "train"},
    )


def register_propensity(params: Params, model_dir: Path = paths.PROPENSITY_DIR):
    """Register the trained propensity MLP with its test metrics and lineage; the gate decides champion."""
    return register_user_classifier(
        "propensity", params, model_dir, paths.PROPENSITY_METRICS, paths.PROPENSITY_FEATURES, {"propensity": params.propensity.model_dump()}
    )
