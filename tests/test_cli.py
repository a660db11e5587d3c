"""The `shopsight` CLI views: `models list` fits an 80-column terminal, details behind --wide and --json."""

from __future__ import annotations

import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from shopsight import cli, registry

WIDTH = 80


def _model(task: str, version: str, status: str, main_metric: str, score: float, registered_at: str) -> tuple[str, dict]:
    return f"{task}:{version}", {
        "status": status,
        "score": score,
        "main_metric": main_metric,
        "metrics": {main_metric: score, "pr_auc": 0.41234, "log_loss": 0.2931, "brier": 0.0712, "ece": 0.0123, "lift_top_decile": 3.21},
        "registered_at": registered_at,
        "lineage": {
            "git_revision": "5b71bbc0d1e2f3a4b5c6d7e8f90a1b2c3d4e5f60-dirty",
            "data_hash": "dvc:0123456789abcdef0123456789abcdef",
            "trained_at": "2026-11-30T11:02:03.456789+00:00",
        },
        "gate": f"{main_metric} {score:.4f} vs champion 0.7000: improvement +0.0123 >= 0.0",
    }


@pytest.fixture
def registry_index(tmp_path, monkeypatch):
    """A registry index with the longest task names and BentoML-length (16 character) versions."""
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    tasks = {
        "recommender": [("qx3h7kq2ggnbpwse", "champion", "ndcg_at_10", 0.18421), ("aa3h7kq2ggnbpwse", "challenger", "ndcg_at_10", 0.1701)],
        "propensity": [("zz3h7kq2ggnbpwse", "retired", "roc_auc", 0.90123)],
        "demand": [("dd3h7kq2ggnbpwse", "champion", "wape", 0.61234)],
    }
    index = {"tasks": {}}
    for n, (task, models) in enumerate(tasks.items()):
        entries = dict(_model(task, v, s, m, x, f"2026-11-30T1{n}:0{i}:00+00:00") for i, (v, s, m, x) in enumerate(models))
        index["tasks"][task] = {"champion": None, "history": [], "models": entries, "events": []}
    path = registry.bentoml_home() / registry.INDEX_NAME
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(index))
    return index


@pytest.fixture
def narrow_console(monkeypatch) -> None:
    """The CLI's console as an 80-column terminal would size it (the CliRunner captures what it prints)."""
    monkeypatch.setattr(cli, "console", Console(width=WIDTH, force_terminal=False))


def test_models_list_fits_80_columns_without_cutting_a_value(registry_index, narrow_console):
    result = CliRunner().invoke(cli.app, ["models", "list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= WIDTH, result.output
    assert "…" not in result.output, result.output
    for task, entry in registry_index["tasks"].items():
        for tag, info in entry["models"].items():
            row = next(line for line in lines if tag in line)  # the whole tag on one line: copy-paste into `promote`
            assert info["status"] in row and f"{info['main_metric']}={info['score']:.4f}" in row, row
    assert "git_revision" not in result.output and "dvc:0123" not in result.output, "lineage belongs to --wide/--json"


def test_models_list_task_filter(registry_index, narrow_console):
    result = CliRunner().invoke(cli.app, ["models", "list", "--task", "demand"])
    assert result.exit_code == 0, result.output
    assert "demand:dd3h7kq2ggnbpwse" in result.output and "recommender:" not in result.output


def test_models_list_wide_shows_every_metric_and_the_lineage_on_a_wide_terminal(registry_index, monkeypatch):
    monkeypatch.setattr(cli, "console", Console(width=220, force_terminal=False))
    result = CliRunner().invoke(cli.app, ["models", "list", "--wide"])
    assert result.exit_code == 0, result.output
    assert "…" not in result.output, result.output
    for needle in ("lift_top_decile=3.2100", "5b71bbc0d1e2", "dvc:0123456789ab", "2026-11-30T11:02:03", "improvement +0.0123"):
        assert needle in result.output, needle


def test_models_list_json_has_every_field(registry_index, narrow_console):
    result = CliRunner().invoke(cli.app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == 4 and all({"lineage", "metrics", "gate"} <= set(r) for r in rows)
    assert rows[0]["registered_at"] >= rows[-1]["registered_at"], "newest first"
