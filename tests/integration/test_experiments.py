"""The DVC experiment workflow on tiny params: commit the results of record, run two experiments, compare them.

`dvc repro`, then `dvc.lock` and metrics/ committed with git, then `dvc exp run --set-param ...` twice: `dvc exp
show --only-changed` must show every experiment's headline numbers (no `!`) in a narrow table, and `dvc metrics
diff` must compare the workspace with HEAD.
"""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from shopsight.headline import TASKS
from tests.conftest import run

pytestmark = pytest.mark.integration

DVC = [sys.executable, "-m", "dvc"]
GIT = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
LEARNING_RATES = (0.002, 0.005)  # not the value test_dvc_pipeline sets (0.003): each run must retrain
MAX_COLUMNS = 15
PROPENSITY_STAGES = {"train_propensity", "evaluate_propensity", "headline"}


@pytest.fixture(scope="module")
def experiments(tiny_project_pristine, tmp_path_factory) -> dict:
    """A copy of the reproduced tiny project with its results committed and two experiments run on it.

    Copying the run's reproduced project (with its DVC cache) as `dvc repro` left it saves a second full `dvc repro`;
    the `dvc repro` below only checks that nothing is left to do.
    """
    project = tmp_path_factory.mktemp("experiments") / "project"
    shutil.copytree(tiny_project_pristine, project, symlinks=True, ignore=shutil.ignore_patterns("tmp"))  # .dvc/tmp: locks, exp cache
    run(DVC + ["repro"], project)
    assert run(["git", "check-ignore", "-q", "metrics/headline.json"], project, check=False).returncode == 1, "metrics/ is git-ignored"
    run(GIT + ["add", "params.yaml", "dvc.lock", "metrics"], project)
    run(GIT + ["commit", "-qm", "results of record"], project)
    committed = {"status": run(DVC + ["status"], project).stdout, "metrics": run(DVC + ["metrics", "show", "--json"], project).stdout}
    logs = [run(DVC + ["exp", "run", "--set-param", f"propensity.mlp.learning_rate={lr}"], project).stdout for lr in LEARNING_RATES]
    return {"project": project, "committed": committed, "logs": logs}


def test_committed_results_leave_nothing_to_reproduce(experiments):
    """The committed dvc.lock and metrics are the results of record: `dvc status` is true, only the headline is a metric."""
    assert "up to date" in experiments["committed"]["status"], experiments["committed"]["status"]
    files = next(iter(json.loads(experiments["committed"]["metrics"]).values()))["data"]
    assert "metrics/headline.json" in files and "metrics/propensity.json" not in files, files


def test_an_experiment_reruns_only_the_propensity_stages(experiments):
    for log in experiments["logs"]:
        ran = {line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage '")}
        assert ran == PROPENSITY_STAGES, log


def _md_table(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows if not set(row) <= set("|-: ")]


def test_exp_show_only_changed_is_narrow_and_has_every_experiments_headline(experiments):
    project = experiments["project"]
    md = run(DVC + ["exp", "show", "--only-changed", "--md"], project).stdout
    print(md)  # the table, for the record (pytest -s)
    header, *rows = _md_table(md)
    assert len(header) < MAX_COLUMNS, md
    assert "!" not in md, f"a revision's metrics could not be read:\n{md}"
    headline = {f"propensity.{key}" for key in ("roc_auc", "best_baseline", "gap")}
    headline_cols = [i for i, name in enumerate(header) if name in headline]
    # only what differs between rows is shown: the best baseline's score does not change with the MLP's learning rate
    assert {"propensity.roc_auc", "propensity.gap"} <= {header[i] for i in headline_cols}, header
    assert not any(name.startswith(("churn.", "recommender.", "demand.")) for name in header), header
    assert "propensity.mlp.learning_rate" in header, header
    assert len(rows) == 2 + len(LEARNING_RATES), md  # workspace, the baseline commit, each experiment
    for row in rows:
        for i in headline_cols:
            float(row[i])  # a number in every row: workspace, the committed baseline and each experiment

    readme = run(DVC + ["exp", "show", "--only-changed", "--drop", ".*/.*", "--md"], project).stdout  # as in the README
    assert not any("/" in name for name in _md_table(readme)[0]), readme

    shown = json.loads(run(DVC + ["exp", "show", "--json"], project).stdout)
    baseline = next(entry for entry in shown if entry["rev"] != "workspace")
    exps = [rev for group in baseline["experiments"] or [] for rev in group["revs"]]
    assert len(exps) == len(LEARNING_RATES)
    for rev in [baseline, *exps]:
        numbers = rev["data"]["metrics"]["metrics/headline.json"]["data"]
        assert set(numbers) == {spec.task for spec in TASKS}
        for spec in TASKS:
            assert set(numbers[spec.task]) == {spec.key, "best_baseline", "gap"}
            assert all(isinstance(v, float) for v in numbers[spec.task].values()), numbers
    rates = {rev["data"]["params"]["params.yaml"]["data"]["propensity"]["mlp"]["learning_rate"] for rev in exps}
    assert rates == set(LEARNING_RATES)


def test_metrics_diff_compares_the_workspace_with_head(experiments):
    project = experiments["project"]
    diff = run(DVC + ["metrics", "diff", "--all", "--json"], project)  # exit 0 is checked by run()
    headline = json.loads(diff.stdout)["metrics/headline.json"]
    for key in ("propensity.roc_auc", "propensity.gap", "demand.wape_lower_better"):
        assert isinstance(headline[key]["old"], float) and isinstance(headline[key]["new"], float), headline[key]
    assert headline["demand.wape_lower_better"]["old"] == headline["demand.wape_lower_better"]["new"], "demand did not rerun"
    table = run(DVC + ["metrics", "diff"], project).stdout
    assert "HEAD" in table and "propensity.roc_auc" in table, table


def test_png_plots_render_without_the_network(experiments, tmp_path):
    """The README's offline view: `dvc plots show plots/*/*.png` embeds the images with no script and no CDN."""
    project = experiments["project"]
    pngs = sorted(str(p.relative_to(project)) for p in project.glob("plots/*/*.png"))
    assert len(pngs) >= 8, pngs
    run(DVC + ["plots", "show", *pngs, "-o", str(tmp_path / "html")], project)
    page = (tmp_path / "html" / "index.html").read_text()
    assert page.count("<img") == len(pngs) and "<script" not in page and "https://" not in page, page[:2000]
    assert len(list((tmp_path / "html" / "static").glob("*.png"))) == len(pngs)
