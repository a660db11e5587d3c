"""A real `dvc repro` of the whole pipeline in a temporary git repository, on tiny synthetic data."""

import json
import sys

import pytest

from tests.conftest import run, write_params

pytestmark = pytest.mark.integration


def test_repro_writes_metrics_plots_reports(tiny_project):
    metrics = json.loads((tiny_project / "metrics/propensity.json").read_text())
    assert {"mlp", "logistic_regression"} <= set(metrics["test"])
    for model in metrics["test"].values():
        assert 0.0 <= model["roc_auc"] <= 1.0 and 0.0 <= model["pr_auc"] <= 1.0
    assert metrics["test"]["logistic_regression"]["roc_auc"] > 0.55, "the shop has signal: a baseline must beat chance"
    assert metrics["n_test"] > 0

    ingest = json.loads((tiny_project / "metrics/ingest.json").read_text())
    assert ingest["rows_in"] == ingest["rows_out"] + ingest["rejected"] + ingest["duplicates_removed"]
    assert ingest["rows_out"] > 1000

    for plot in ("plots/propensity/roc.png", "plots/propensity/history.png", "plots/propensity/history.csv", "plots/propensity/roc.csv"):
        assert (tiny_project / plot).stat().st_size > 0, plot
    drift = json.loads((tiny_project / "monitoring/reports/pipeline/drift_summary.json").read_text())
    assert drift["decision"] in {"retrain", "no_action"} and 0 <= drift["drift_share"] <= 1
    assert (tiny_project / "monitoring/reports/pipeline/drift_report.html").stat().st_size > 10_000

    shown = run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], tiny_project).stdout
    assert "roc_auc" in shown


def test_second_repro_does_nothing(tiny_project):
    out = run([sys.executable, "-m", "dvc", "repro"], tiny_project).stdout
    assert "Running stage" not in out, out


def test_changing_a_model_hyperparameter_reruns_only_training_and_evaluation(tiny_project):
    write_params(tiny_project, {"propensity": {"mlp": {"learning_rate": 0.003}}})
    diff = run([sys.executable, "-m", "dvc", "params", "diff"], tiny_project).stdout
    assert "propensity.mlp.learning_rate" in diff
    out = run([sys.executable, "-m", "dvc", "repro"], tiny_project).stdout
    assert "Running stage 'train_propensity'" in out
    assert "Running stage 'evaluate_propensity'" in out
    for untouched in ("ingest", "features", "drift_report"):
        assert f"Running stage '{untouched}'" not in out, f"{untouched} should have been skipped:\n{out}"
