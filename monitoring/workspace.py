"""The Evidently workspace of the weekly reports: one project, a snapshot per week and source, a dashboard
with drift share and quality over time (propensity ROC-AUC, recommendation NDCG@k and HR@k). Open it with

    evidently ui --workspace monitoring/workspace --host 127.0.0.1
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PROJECT_NAME = "shopsight weekly monitoring"
DRIFT_SOURCES = {"user_features": "user features at week end", "event_mix": "events that arrived", "served": "what the service saw"}


def _dashboard(project, ranking_k: int) -> None:
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel

    from monitoring.recommend_quality import QUALITY_TAG

    drift = [
        PanelMetric(legend=label, metric="DriftedColumnsCount", metric_labels={"value_type": "share"}, tags=[source])
        for source, label in DRIFT_SOURCES.items()
    ]
    project.dashboard.add_panel(line_plot_panel(title="Share of drifted columns per week", values=drift, size="full"), tab="Weekly")
    # one quality-over-time panel: propensity ROC-AUC next to NDCG@k / HR@k of the served recommendations
    quality = [PanelMetric(legend="propensity ROC-AUC", metric="RocAuc", tags=["quality"])] + [
        PanelMetric(legend=f"recommend {name}@{ranking_k}", metric="MeanValue", metric_labels={"column": f"{column}_at_{ranking_k}"},
                    tags=[QUALITY_TAG])
        for name, column in (("NDCG", "ndcg"), ("HR", "hr"))
    ]
    project.dashboard.add_panel(
        line_plot_panel(title="Model quality over time (matured predictions)", values=quality, size="full"),
        tab="Weekly",
    )


def open_project(workspace_dir: str | Path, ranking_k: int = 10):
    """The workspace and its monitoring project (created with its dashboard on first use; `ranking_k`:
    monitoring.policy.ranking_k, the k of the NDCG@k / HR@k lines)."""
    from evidently.ui.workspace import Workspace

    ws = Workspace.create(str(workspace_dir))
    found = [p for p in ws.search_project(PROJECT_NAME) if p.name == PROJECT_NAME]
    if found:
        return ws, found[0]
    project = ws.create_project(PROJECT_NAME, description="Weekly drift and quality of the shopsight champion (flows/monitoring.py)")
    _dashboard(project, ranking_k)
    return ws, project


def add_week(workspace_dir: str | Path, snapshots: dict[str, Any], ranking_k: int = 10) -> list[str]:
    """Add a week's snapshots (source -> Evidently snapshot) to the project; returns the run ids."""
    ws, project = open_project(workspace_dir, ranking_k)
    return [str(ws.add_run(project.id, snapshot, include_data=False)) for snapshot in snapshots.values()]


def list_weeks(workspace_dir: str | Path) -> int:
    """How many snapshots the monitoring project holds."""
    ws, project = open_project(workspace_dir)
    return len(ws.list_runs(project.id))
