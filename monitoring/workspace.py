"""The Evidently workspace of the weekly reports: one project, a snapshot per week and source, a dashboard
with drift share and quality over time. Open it with

    evidently ui --workspace monitoring/workspace --host 127.0.0.1
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PROJECT_NAME = "shopsight weekly monitoring"
DRIFT_SOURCES = {"user_features": "user features at week end", "event_mix": "events that arrived", "served": "what the service saw"}


def _dashboard(project) -> None:
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel

    drift = [
        PanelMetric(legend=label, metric="DriftedColumnsCount", metric_labels={"value_type": "share"}, tags=[source])
        for source, label in DRIFT_SOURCES.items()
    ]
    project.dashboard.add_panel(line_plot_panel(title="Share of drifted columns per week", values=drift, size="full"), tab="Weekly")
    project.dashboard.add_panel(
        line_plot_panel(
            title="Propensity ROC-AUC of matured predictions", values=[PanelMetric(legend="ROC-AUC", metric="RocAuc", tags=["quality"])],
            size="full",
        ),
        tab="Weekly",
    )


def open_project(workspace_dir: str | Path):
    """The workspace and its monitoring project (created with its dashboard on first use)."""
    from evidently.ui.workspace import Workspace

    ws = Workspace.create(str(workspace_dir))
    found = [p for p in ws.search_project(PROJECT_NAME) if p.name == PROJECT_NAME]
    if found:
        return ws, found[0]
    project = ws.create_project(PROJECT_NAME, description="Weekly drift and quality of the shopsight champion (flows/monitoring.py)")
    _dashboard(project)
    return ws, project


def add_week(workspace_dir: str | Path, snapshots: dict[str, Any]) -> list[str]:
    """Add a week's snapshots (source -> Evidently snapshot) to the project; returns the run ids."""
    ws, project = open_project(workspace_dir)
    return [str(ws.add_run(project.id, snapshot, include_data=False)) for snapshot in snapshots.values()]


def list_weeks(workspace_dir: str | Path) -> int:
    """How many snapshots the monitoring project holds."""
    ws, project = open_project(workspace_dir)
    return len(ws.list_runs(project.id))
