"""`dvc repro ingest` with params.yaml pointing at a small file in each public format (real DVC, temp git repo)."""

import json
import shutil
import sys

import pandas as pd
import pytest

from tests.conftest import REPO_ROOT, copy_project, run, write_params

pytestmark = pytest.mark.integration
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "sources"

CASES = {
    "retailrocket": ("retailrocket/events.csv", {"item_properties": ["retailrocket/item_properties_part1.csv", "retailrocket/item_properties_part2.csv"], "category_tree": "retailrocket/category_tree.csv"}),
    "rees46": (["rees46/2019-Oct.csv", "rees46/2019-Nov.csv"], {}),
    "taobao": ("taobao/UserBehavior.csv", {}),
    "cdnow": ("cdnow/CDNOW_master.txt", {}),
    "online_retail": ("online_retail/Online_Retail.csv", {}),
    "generic": ("generic/clicks.csv", None),
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("adapters"))
    shutil.copytree(FIXTURES, project / "raw")
    return project


def _rel(value):
    if isinstance(value, list):
        return [f"raw/{v}" for v in value]
    return f"raw/{value}"


@pytest.mark.parametrize("kind", list(CASES))
def test_dvc_repro_ingest_on_each_format(project, kind):
    path, options = CASES[kind]
    if options is None:  # the generic fixture documents its own mapping in the test module of the sources
        from tests.test_sources import GENERIC_OPTIONS as options  # noqa: N811
    options = {k: _rel(v) if k in ("item_properties", "category_tree") else v for k, v in options.items()}
    write_params(project, {"data": {"source": kind, "path": _rel(path), "options": None}})
    write_params(project, {"data": {"options": options}})  # replace, not merge, the previous format's options
    out = run([sys.executable, "-m", "dvc", "repro", "ingest"], project).stdout
    assert "Running stage 'ingest'" in out
    report = json.loads((project / "metrics/ingest.json").read_text())
    assert report["rows_out"] > 0
    assert report["rows_in"] == report["rows_out"] + report["rejected"] + report["duplicates_removed"]
    rejects = pd.read_parquet(project / "data/rejects.parquet")
    assert len(rejects) == report["rejected"]
    assert (rejects["reason"].str.len() > 0).all()
    events = pd.read_parquet(project / "data/events.parquet")
    assert set(events["event_type"]) <= {"view", "cart", "remove_from_cart", "favorite", "purchase"}
    assert events["session_id"].notna().all(), "sessions are derived where the source has none"
