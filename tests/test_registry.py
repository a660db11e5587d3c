"""The registry on a real BentoML model store (isolated BENTOML_HOME): gate, promote, rollback, lineage, locking."""

from __future__ import annotations

import json
import multiprocessing
import uuid
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from shopsight import registry
from shopsight.config import GateParams
from shopsight.registry import RegistryError, compare_to_champion

GATE = GateParams(metric="roc_auc", min_improvement=0.01, max_regression=0.02)


@pytest.fixture
def task() -> str:
    return f"t{uuid.uuid4().hex[:10]}"  # a task of its own per test: the store and index are shared by the session


def _model_dir(tmp_path: Path) -> Path:
    path = tmp_path / uuid.uuid4().hex
    path.mkdir()
    (path / "model.bin").write_bytes(uuid.uuid4().bytes)  # distinct content = a distinct model
    (path / "feature_columns.json").write_text('["a", "b"]')
    return path


def _register(task: str, tmp_path: Path, roc_auc: float, log_loss: float = 0.5, model_dir: Path | None = None,
              test_roc_auc: float | None = None, **kw):
    """`roc_auc` is the validation score the gate compares; the test score is reported (default: 0.05 lower)."""
    test_auc = roc_auc - 0.05 if test_roc_auc is None else test_roc_auc
    metrics = {"valid": {"mlp": {"roc_auc": roc_auc, "pr_auc": 0.3, "log_loss": log_loss}},
               "test": {"mlp": {"roc_auc": test_auc, "pr_auc": 0.3, "log_loss": log_loss}}}
    return registry.register_model(
        task, model_dir or _model_dir(tmp_path), metrics, {"lr": 0.001}, main_metric="roc_auc", model_key="mlp", gate=GATE, **kw
    )


def _status(task: str) -> dict[str, str]:
    return {row["tag"]: row["status"] for row in registry.list_models(task)}


def test_first_model_is_champion_with_lineage_and_reference_in_the_store(task, tmp_path):
    import bentoml

    reference = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.0, 1.0, 0.5]})
    reg = _register(task, tmp_path, 0.70, reference=reference)
    assert reg.status == "champion" and reg.promoted and registry.champion_tag(task) == reg.tag

    model = bentoml.models.get(reg.tag)
    lineage = model.info.metadata["lineage"]
    for key in ("git_revision", "data_hash", "model_hash", "trained_at", "registered_at", "params_md5"):
        assert lineage[key], key
    assert model.info.metadata["params"] == {"lr": 0.001}
    assert model.info.metadata["metrics"]["valid"]["mlp"]["roc_auc"] == 0.70
    assert model.info.metadata["metrics"]["test"]["mlp"]["roc_auc"] == pytest.approx(0.65)
    assert lineage["reference_dataset"]["rows"] == 3
    pd.testing.assert_frame_equal(pd.read_parquet(registry.reference_path(task)), reference)
    assert (Path(model.path) / "model.bin").exists()

    row = registry.list_models(task)[0]
    assert row["metrics"]["log_loss"] == 0.5 and row["lineage"]["has_reference"] is True
    assert row["gate_split"] == "valid" and row["score"] == 0.70 and row["test_score"] == pytest.approx(0.65)


def test_the_gate_compares_validation_scores_never_test(task, tmp_path):
    first = _register(task, tmp_path, 0.70, test_roc_auc=0.60)
    # far better on test, worse on validation: rejected (choosing on test would make its score optimistic)
    second = _register(task, tmp_path, 0.69, test_roc_auc=0.90)
    assert not second.promoted and registry.champion_tag(task) == first.tag
    assert "0.6900" in second.reason and "0.7000" in second.reason


def test_metrics_without_validation_scores_are_refused_with_the_fix(task, tmp_path):
    with pytest.raises(RegistryError, match="no 'valid' scores.*dvc repro"):
        registry.register_model(task, _model_dir(tmp_path), {"test": {"mlp": {"roc_auc": 0.7}}}, {}, main_metric="roc_auc",
                                model_key="mlp", gate=GATE)


def test_better_challenger_is_promoted_and_the_old_champion_retired(task, tmp_path):
    first = _register(task, tmp_path, 0.70)
    second = _register(task, tmp_path, 0.75)
    assert second.promoted and second.status == "champion"
    assert _status(task) == {first.tag: "retired", second.tag: "champion"}
    assert any(r.metric == "roc_auc" and r.improvement == pytest.approx(0.05) for r in second.decision.rows)


def test_worse_challenger_leaves_the_champion_untouched(task, tmp_path):
    champion = _register(task, tmp_path, 0.70)
    worse = _register(task, tmp_path, 0.69)
    not_enough = _register(task, tmp_path, 0.705)  # better, but by less than min_improvement
    assert registry.champion_tag(task) == champion.tag
    assert worse.status == not_enough.status == "challenger" and not worse.promoted
    assert worse.reason.startswith("rejected")
    assert _status(task)[champion.tag] == "champion"


def test_regression_in_another_metric_beyond_tolerance_is_rejected(task, tmp_path):
    champion = _register(task, tmp_path, 0.70, log_loss=0.50)
    regressed = _register(task, tmp_path, 0.80, log_loss=0.60)  # log loss: lower is better, 0.10 worse
    assert regressed.status == "challenger" and "log_loss" in regressed.reason
    assert registry.champion_tag(task) == champion.tag
    within = _register(task, tmp_path, 0.80, log_loss=0.51)  # 0.01 worse: within the 0.02 tolerance
    assert within.promoted


def test_a_reference_challenger_replaces_a_learned_champion_that_leads_it_only_by_the_validation_noise(task, tmp_path):
    """selection.rule beat_reference serves a reference when no learned model leads it beyond k_se SEs; the gate
    allows a reference challenger the same noise against a registered learned champion, and no more."""
    selection = {"rule": "beat_reference", "k_se": 1.0, "se_of_lead": 0.02, "champion": "frequency"}
    references = ["frequency", "recency"]
    learned = _register(task, tmp_path, 0.70, lineage={"is_reference": False})

    def challenger(roc_auc: float, sel=selection, name="frequency"):
        def scores():
            stored = registry.ChampionScores(registry.champion_tag(task), None, registry.STORED_BASIS)
            return registry.with_reference_tolerance(task, stored, sel, name, references)
        return _register(task, tmp_path, roc_auc, score_champion=scores, lineage={"is_reference": name in references})

    # GATE asks +0.01 of a challenger; a reference gets 1 SE (0.02) off that: -0.01. 0.035 behind is beyond it
    far = challenger(0.665)
    assert not far.promoted and "the learned champion stays only if it leads it by more than 1 SE" in far.reason
    assert not challenger(0.695, sel={**selection, "rule": "best"}).promoted  # another rule: the plain gate
    assert not challenger(0.695, name="lightgbm").promoted  # a learned challenger: the plain gate
    near = challenger(0.695)  # 0.005 behind: within the noise, so the reference is served as a fresh run would
    assert near.promoted and registry.champion_tag(task) == near.tag and near.tag != learned.tag, near.reason
    # a reference champion gets no allowance against another reference challenger, however noisy the run
    assert not challenger(0.684, sel={**selection, "se_of_lead": 0.05}, name="recency").promoted
    assert registry.champion_tag(task) == near.tag
    # registrations from before lineage said it: a rule or BTYD model counts as a reference
    assert registry.registered_is_reference({"family": "btyd", "lineage": {}})
    assert not registry.registered_is_reference({"family": "lightgbm", "lineage": {}})


def test_registering_the_same_model_files_again_is_a_no_op(task, tmp_path):
    model_dir = _model_dir(tmp_path)
    first = _register(task, tmp_path, 0.70, model_dir=model_dir)
    again = _register(task, tmp_path, 0.70, model_dir=model_dir)
    assert again.tag == first.tag and not again.registered
    assert len(registry.list_models(task)) == 1


def test_promote_and_rollback_walk_the_champion_history(task, tmp_path):
    a = _register(task, tmp_path, 0.70)
    b = _register(task, tmp_path, 0.60)  # rejected challenger
    c = _register(task, tmp_path, 0.80)
    assert registry.champion_tag(task) == c.tag

    assert registry.promote(b.tag) == c.tag
    assert _status(task) == {a.tag: "retired", b.tag: "champion", c.tag: "retired"}
    assert registry.rollback(task) == c.tag
    assert registry.rollback(task) == a.tag
    assert _status(task) == {a.tag: "champion", b.tag: "retired", c.tag: "retired"}
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback(task)
    with pytest.raises(RegistryError, match="not registered"):
        registry.promote(f"{task}:doesnotexist")
    with pytest.raises(RegistryError, match="no models registered"):
        registry.rollback("no-such-task")
    actions = [e["action"] for e in registry.load_index()["tasks"][task]["events"]]
    assert actions.count("rollback") == 2 and actions.count("promote") == 3


def test_gate_directions_and_guards():
    champion = {"roc_auc": 0.7, "log_loss": 0.5, "wape": 0.3}
    passed = compare_to_champion({"roc_auc": 0.72, "log_loss": 0.49, "wape": 0.29}, champion, main_metric="roc_auc", max_regression=0.0)
    assert passed.passed and "| wape | guard |" in passed.markdown()
    wape_main = compare_to_champion({"roc_auc": 0.5, "wape": 0.25}, {"roc_auc": 0.7, "wape": 0.3}, main_metric="wape", min_improvement=0.04)
    assert wape_main.passed  # lower WAPE by 0.05 is an improvement; roc_auc is not guarded without a tolerance
    guarded = compare_to_champion(
        {"roc_auc": 0.5, "wape": 0.25}, {"roc_auc": 0.7, "wape": 0.3}, main_metric="wape", max_regression=0.1, guard_metrics=["roc_auc"]
    )
    assert not guarded.passed and "roc_auc worse by 0.2000" in guarded.reason
    with pytest.raises(RegistryError, match="ndcg"):
        compare_to_champion({"roc_auc": 0.5}, None, main_metric="ndcg")


def _bump_counter(n: int) -> None:
    for _ in range(n):
        with registry.index_transaction() as index:
            index["counter"] = index.get("counter", 0) + 1


def test_concurrent_index_writers_lose_no_update():
    with registry.index_transaction() as index:
        index["counter"] = 0
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_bump_counter, args=(25,)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert registry.load_index()["counter"] == 100


def test_an_exception_inside_a_transaction_discards_its_changes():
    with pytest.raises(RuntimeError):
        with registry.index_transaction() as index:
            index["half_done"] = True
            raise RuntimeError("crash mid-update")
    assert "half_done" not in registry.load_index()


def test_cli_list_promote_rollback(task, tmp_path):
    from shopsight.cli import app

    a = _register(task, tmp_path, 0.70)
    b = _register(task, tmp_path, 0.60)
    runner = CliRunner()
    listed = runner.invoke(app, ["models", "list", "--task", task, "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert {r["tag"]: r["status"] for r in rows} == {a.tag: "champion", b.tag: "challenger"}
    assert all("git_revision" in r["lineage"] for r in rows)

    assert runner.invoke(app, ["models", "list", "--task", task]).exit_code == 0
    promoted = runner.invoke(app, ["models", "promote", b.tag])
    assert promoted.exit_code == 0 and registry.champion_tag(task) == b.tag
    rolled = runner.invoke(app, ["models", "rollback", task])
    assert rolled.exit_code == 0 and registry.champion_tag(task) == a.tag
    bad = runner.invoke(app, ["models", "rollback", task])
    assert bad.exit_code == 2 and "no previous champion" in bad.output
