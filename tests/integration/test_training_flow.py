"""The Prefect training flow, run for real against a temporary Prefect API (prefect_test_harness)."""

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_flow_registers_a_model_and_writes_a_drift_report(tiny_project):
    from prefect.testing.utilities import prefect_test_harness

    from flows.training import training_flow
    from shopsight.registry import list_models

    with prefect_test_harness(server_startup_timeout=None):  # None: PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS (600 s, busy CI)
        result = training_flow(project_dir=str(tiny_project))
    tag = result["registration"]["tag"]
    assert tag.startswith("propensity:")
    assert any(row["tag"] == tag for row in list_models("propensity"))
    import bentoml

    model = bentoml.models.get(tag)
    champion = model.info.metadata["metrics"]["champion"]
    assert json.loads((Path(model.path) / "candidate.json").read_text())["name"] == champion  # whatever family won
    assert model.info.metadata["lineage"]["data_hash"].startswith(("dvc:", "md5:"))
    assert "roc_auc" in model.info.metadata["metrics"]["valid"][champion] and "roc_auc" in model.info.metadata["metrics"]["test"][champion]
    assert Path(result["drift"]["html"]).exists() or (tiny_project / result["drift"]["html"]).exists()
