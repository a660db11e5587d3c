"""Evidently data-drift report of current features against the reference (training window) with a decision."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from shopsight.config import DriftParams


@dataclass
class DriftSummary:
    n_columns: int
    n_drifted: int
    drift_share: float
    threshold_share: float
    dataset_drift: bool
    decision: str  # "retrain" | "no_action"
    reason: str
    reference_rows: int
    current_rows: int
    sampled: bool
    drifted_columns: dict[str, float] = field(default_factory=dict)
    html: str = ""


def _column_drifted(metric: dict) -> tuple[str, float, bool]:
    cfg = metric["config"]
    method, threshold, value = str(cfg.get("method", "")), float(cfg.get("threshold", 0.05)), float(metric["value"])
    # p-value tests drift when the p-value is small; distance tests when the distance is large.
    drifted = value < threshold if "p_value" in method else value >= threshold
    return cfg["column"], value, drifted


def build_drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    out_dir: Path,
    params: DriftParams,
    columns: list[str] | None = None,
    seed: int = 0,
) -> DriftSummary:
    """Write drift_report.html and drift_summary.json to out_dir and return the summary.

    Each side is sampled down to params.max_rows rows (uniformly, seeded) so the report stays fast;
    the summary says when that happened.
    """
    from evidently import Report
    from evidently.presets import DataDriftPreset

    columns = columns or [c for c in reference.columns if c in current.columns]
    sampled = len(reference) > params.max_rows or len(current) > params.max_rows
    ref = reference[columns].sample(n=min(len(reference), params.max_rows), random_state=seed)
    cur = current[columns].sample(n=min(len(current), params.max_rows), random_state=seed)
    if len(ref) == 0 or len(cur) == 0:
        raise ValueError(f"drift report needs rows on both sides: reference {len(ref)}, current {len(cur)}")
    preset = DataDriftPreset(columns=columns, drift_share=params.drift_share, method=params.stattest, threshold=params.stattest_threshold)
    snapshot = Report([preset]).run(cur.reset_index(drop=True), ref.reset_index(drop=True))
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path = out_dir / "drift_report.html"
    snapshot.save_html(str(html_path))

    drifted: dict[str, float] = {}
    n_cols = 0
    for metric in snapshot.dict()["metrics"]:
        if metric["config"].get("type", "").endswith("ValueDrift"):
            n_cols += 1
            column, value, is_drifted = _column_drifted(metric)
            if is_drifted:
                drifted[column] = value
    share = len(drifted) / max(n_cols, 1)
    dataset_drift = share >= params.drift_share
    summary = DriftSummary(
        n_columns=n_cols,
        n_drifted=len(drifted),
        drift_share=round(share, 4),
        threshold_share=params.drift_share,
        dataset_drift=dataset_drift,
        decision="retrain" if dataset_drift else "no_action",
        reason=(
            f"{len(drifted)}/{n_cols} columns drifted (share {share:.2f} {'>=' if dataset_drift else '<'} {params.drift_share})"
        ),
        reference_rows=len(ref),
        current_rows=len(cur),
        sampled=sampled,
        drifted_columns=drifted,
        html=str(html_path),
    )
    (out_dir / "drift_summary.json").write_text(json.dumps(asdict(summary), indent=2, default=float))
    return summary
