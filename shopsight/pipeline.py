"""The pipeline steps as plain functions: the CLI, DVC stages and Prefect tasks all call these."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shopsight import paths
from shopsight.config import Params


def run_features(params: Params) -> dict[str, Any]:
    """events.parquet -> data/features/propensity.parquet (user x cutoff rows with label and split); with
    orchestration.dask.partition, built by user-hash shards on Dask (shopsight.shards), the same rows."""
    from shopsight.features import build_propensity_dataset

    if params.orchestration.dask.partition:
        from shopsight.shards import build_propensity_dataset_on_dask

        dataset = build_propensity_dataset_on_dask(paths.EVENTS, params)
    else:
        dataset = build_propensity_dataset(paths.EVENTS, params.features)
    paths.FEATURES_DIR.mkdir(parents=True, exist_ok=True)
    dataset.to_parquet(paths.PROPENSITY_FEATURES, index=False)
    summary = dataset.groupby("split")["label"].agg(["size", "mean"]).round(4)
    return {split: {"rows": int(r["size"]), "positive_rate": float(r["mean"])} for split, r in summary.iterrows()}


def register_propensity(params: Params):
    """Register the propensity champion (whatever its family) with its metrics and lineage; the gate decides."""
    from shopsight.tasks import PROPENSITY
    from shopsight.tasks.user_binary import register_user_task

    return register_user_task(PROPENSITY, params)
