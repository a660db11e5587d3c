"""Headline metrics: the champion's score, the best baseline's, the gap (positive = model better), names apart."""

from __future__ import annotations

import json
import math

import pytest
from rich.console import Console
from typer.testing import CliRunner

from shopsight import cli, headline, paths
from shopsight.headline import TASKS, HeadlineError, task_headline

SPEC = {spec.task: spec for spec in TASKS}


def _binary(model: float, **baselines: float) -> dict:
    test = {"mlp": {"roc_auc": model, "pr_auc": 0.3}, "mlp_calibrated": {"roc_auc": 0.99}, "oracle": {"roc_auc": 0.999},
            "lightgbm": {"roc_auc": 0.995}}  # a candidate that lost on validation: never the baseline, never the model
    test |= {name: {"roc_auc": value} for name, value in baselines.items()}
    return {"test": test, "champion": "mlp", "references": list(baselines), "main_metric": "roc_auc", "oracle_note": "a note",
            "targets": {"metric": "roc_auc", "champion": "mlp"}}


def _full_metrics() -> dict[str, dict]:
    return {
        "propensity": _binary(0.80, recency=0.78, frequency=0.79),
        "churn": _binary(0.70, recency=0.72, bgnbd=0.65, frequency=0.66),
        "recommender": {"best_model": "transformer", "test": {"gru": {"ndcg_at_10": 0.30}, "transformer": {"ndcg_at_10": 0.20},
                                                               "popularity": {"ndcg_at_10": 0.05}, "cooccurrence": {"ndcg_at_10": 0.12},
                                                               "oracle": {"ndcg_at_10": 0.5}}},
        "demand": {"model_key": "cnn", "test": {"cnn": {"wape": 0.50, "mase": 0.9}, "seasonal_naive": {"wape": 0.60},
                                                "moving_average": {"wape": 0.55}}},
    }


def test_higher_is_better_takes_the_best_baseline_and_a_positive_gap_when_the_model_wins():
    h = task_headline(SPEC["propensity"], _full_metrics()["propensity"])
    assert (h.model, h.best_baseline, h.key) == ("mlp", "frequency", "roc_auc")
    assert h.score == 0.80 and h.baseline_score == 0.79 and h.gap == pytest.approx(0.01) and h.met
    assert h.numbers() == {"roc_auc": 0.80, "best_baseline": 0.79, "gap": pytest.approx(0.01)}


def test_a_model_below_its_best_baseline_has_a_negative_gap_and_is_not_met():
    h = task_headline(SPEC["churn"], _full_metrics()["churn"])
    assert h.best_baseline == "recency" and h.gap == pytest.approx(-0.02) and not h.met


def test_the_model_variants_other_candidates_and_the_oracle_are_never_the_baseline():
    h = task_headline(SPEC["recommender"], _full_metrics()["recommender"])
    # the champion is the model chosen on validation (transformer), not the best test row (gru); oracle excluded
    assert (h.model, h.best_baseline) == ("transformer", "cooccurrence") and h.gap == pytest.approx(0.08)


def test_lower_is_better_says_so_in_the_key_and_keeps_positive_gap_meaning_model_better():
    h = task_headline(SPEC["demand"], _full_metrics()["demand"])
    assert h.key == "wape_lower_better" and h.lower_is_better
    assert h.best_baseline == "moving_average" and h.baseline_score == 0.55
    assert h.gap == pytest.approx(0.05) and h.met


def test_a_tie_is_not_met():
    h = task_headline(SPEC["propensity"], _binary(0.79, logistic_regression=0.79))
    assert h.gap == 0 and not h.met


def test_a_missing_baseline_is_skipped_and_a_non_finite_model_score_is_null_not_met():
    h = task_headline(SPEC["propensity"], _binary(float("nan"), logistic_regression=0.7))
    assert h.best_baseline == "logistic_regression" and h.score is None and h.gap is None and not h.met


def test_a_file_without_the_model_or_any_baseline_fails_clearly():
    with pytest.raises(HeadlineError, match="no test row for the model 'mlp'"):
        task_headline(SPEC["propensity"], {"test": {"logistic_regression": {"roc_auc": 0.7}}})
    with pytest.raises(HeadlineError, match="no baseline"):
        task_headline(SPEC["propensity"], {"test": {"mlp": {"roc_auc": 0.7}, "frequency": {"roc_auc": math.nan}}})


@pytest.fixture
def project_metrics(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for spec in TASKS:
        spec.metrics_file.parent.mkdir(parents=True, exist_ok=True)
        spec.metrics_file.write_text(json.dumps(_full_metrics()[spec.task]))
    return tmp_path


def test_run_headline_writes_numbers_as_metrics_and_names_apart(project_metrics):
    headline.run_headline()
    numbers = json.loads(paths.HEADLINE_METRICS.read_text())
    assert list(numbers) == [spec.task for spec in TASKS]
    assert numbers["demand"] == {"wape_lower_better": 0.5, "best_baseline": 0.55, "gap": pytest.approx(0.05)}
    flat = [v for task in numbers.values() for v in task.values()]
    assert len(flat) == 3 * len(TASKS) and all(isinstance(v, float) for v in flat), "numbers only: a string becomes a column"
    names = json.loads(paths.HEADLINE_MODELS.read_text())
    assert names["churn"] == {"metric": "roc_auc", "lower_is_better": False, "model": "mlp", "best_baseline": "recency", "met": False}
    assert names["demand"]["lower_is_better"] and names["recommender"]["model"] == "transformer"


def test_cli_headline_prints_every_task_in_80_columns(project_metrics, monkeypatch):
    monkeypatch.setattr(cli, "console", Console(width=80, force_terminal=False))
    result = CliRunner().invoke(cli.app, ["headline"])
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80 and "…" not in result.output, result.output
    for needle in ("propensity", "frequency", "+0.0100", "recency", "-0.0200", "NO", "wape"):
        assert needle in result.output, needle
    assert paths.HEADLINE_METRICS.exists()


def test_cli_headline_without_the_full_metrics_exits_2_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli.app, ["headline"])
    assert result.exit_code == 2 and "propensity.json not found" in result.output, result.output


def test_dvc_yaml_declares_only_the_headline_as_the_tasks_metrics():
    """The full tables are committed result files (cache: false outs), the headline stage reads them all."""
    import yaml

    from tests.conftest import REPO_ROOT

    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]

    def declared(stage: dict, kind: str) -> dict[str, dict]:
        return {path: opts for item in stage.get(kind, []) for path, opts in (item.items() if isinstance(item, dict) else [(item, {})])}

    metrics = {path for stage in stages.values() for path in declared(stage, "metrics")}
    assert str(paths.HEADLINE_METRICS) in metrics
    assert not metrics & {str(spec.metrics_file) for spec in TASKS}, metrics
    outs = {path: opts for stage in stages.values() for path, opts in declared(stage, "outs").items()}
    for spec in TASKS:
        assert outs[str(spec.metrics_file)] == {"cache": False}, spec.metrics_file
    assert outs[str(paths.HEADLINE_MODELS)] == {"cache": False}
    assert {str(spec.metrics_file) for spec in TASKS} <= set(stages["headline"]["deps"])
    assert declared(stages["headline"], "metrics") == {str(paths.HEADLINE_METRICS): {"cache": False}}


def test_met_uses_the_tasks_own_margin():
    metrics = _binary(0.80, recency=0.795)
    metrics["targets"]["margin"] = 0.01
    h = task_headline(SPEC["propensity"], metrics)
    assert h.gap == pytest.approx(0.005) and not h.met, "ahead by less than the task's margin: not met"
    metrics["targets"]["margin"] = 0.0
    assert task_headline(SPEC["propensity"], metrics).met
