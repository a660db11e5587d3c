"""monitoring/weekly.py: the weekly report read from the events Parquet (ParquetEvents: DuckDB features over the
file, the event mix in record batches, the reference sampled while read) equals the report of the loaded frames."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from monitoring.weekly import (
    DAY,
    ParquetEvents,
    _between,
    _sample,
    build_weekly_report,
    current_user_features,
    event_mix,
    item_reference_prices,
    load_events,
    parquet_reference_prices,
    read_reference,
    run_weekly_monitoring,
    sample_positions,
    sampled_event_mix,
    sampled_user_features,
    week_window,
)
from shopsight.config import load_params
from shopsight.features import build_propensity_dataset, feature_columns
from shopsight.simulator import SimulatorParams, generate_shop
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A simulated shop whose training cutoffs are closer to the data start than the look-back (truncated
    histories on the current side), its propensity table as the reference (several cutoffs), a project dir."""
    root = tmp_path_factory.mktemp("weekly_parquet")
    result = generate_shop(SimulatorParams(seed=5, n_users=400, n_items=150, days=120, drift_scenario="price_increase",
                                           drift_start="2026-04-13", truth_cutoffs=["2026-04-13"]), root / "sim", progress=False)
    project = root / "project"
    (project / "data" / "features").mkdir(parents=True)
    events_path = project / "data" / "events.parquet"
    # small row groups: the batch reader's row-group skipping and positions across batches are exercised
    pd.read_parquet(result.events_path).to_parquet(events_path, row_group_size=5_000)
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    params = load_params(project / "params.yaml")
    reference_path = project / "data" / "features" / "propensity.parquet"
    build_propensity_dataset(events_path, params.features).to_parquet(reference_path, row_group_size=3_000)
    return {"project": project, "events": events_path, "reference": reference_path, "params": params}


def _policy(params, max_rows):
    return params.monitoring.policy.model_copy(update={"max_rows": max_rows})


def test_sample_positions_are_the_rows_pandas_samples():
    frame = pd.DataFrame({"x": np.arange(1000)})
    for n, seed in ((10, 0), (999, 3), (1000, 1), (5000, 0)):
        pos = sample_positions(len(frame), n, seed)
        expected = _sample(frame, n, seed)["x"].to_numpy()
        assert np.array_equal(frame["x"].to_numpy() if pos is None else pos, expected)


@pytest.mark.parametrize("max_rows", [700, 10**7])
def test_sampled_sources_equal_the_loaded_frames(shop, max_rows):
    params, fp = shop["params"], shop["params"].features
    ref_full = pd.read_parquet(shop["reference"])
    columns = feature_columns(fp.windows_days)
    cutoffs = pd.to_datetime(ref_full["cutoff"], utc=True)
    data_start = pd.read_parquet(shop["events"], columns=["timestamp"])["timestamp"].min()
    start, end = week_window("2026-05-04")
    first = min(cutoffs.max() - 28 * DAY, end - fp.lookback_days * DAY)
    loaded = load_events(shop["events"], first, end)
    on_disk = ParquetEvents(shop["events"], first, end)
    seed = 7

    # the reference, sampled while read
    sample, n_rows, distinct = read_reference(shop["reference"], columns, max_rows, seed)
    assert n_rows == len(ref_full) and distinct == sorted(cutoffs.unique())
    expected = _sample(ref_full[["cutoff", *columns]], max_rows, seed).reset_index(drop=True)
    pd.testing.assert_frame_equal(sample.reset_index(drop=True), expected, check_dtype=False)
    train, n_train, _ = read_reference(shop["reference"], columns, max_rows, seed, split="train")
    expected = _sample(ref_full[ref_full["split"] == "train"][["cutoff", *columns]].reset_index(drop=True), max_rows, seed)
    assert n_train == int((ref_full["split"] == "train").sum())
    pd.testing.assert_frame_equal(train.reset_index(drop=True), expected.reset_index(drop=True), check_dtype=False)

    # current user features: every reference cutoff's history, one part at a time
    old = current_user_features(loaded, end, fp, cutoffs, data_start)
    assert len(set(cutoffs)) > 2 and old.index.nunique() < len(old)  # truncated histories give several parts
    new, total = sampled_user_features(on_disk, end, fp, cutoffs, data_start, max_rows, seed)
    assert total == len(old)
    old_sample = _sample(old[columns], max_rows, seed).reset_index(drop=True)
    assert new.shape == old_sample.shape
    # the file has nanoseconds, the registered frame microseconds: times agree to ~1e-14 days
    np.testing.assert_allclose(new.to_numpy(), old_sample.to_numpy(), rtol=1e-9, atol=1e-9)

    # reference prices and the event mix of the reference window and of the week
    ref_end = cutoffs.max()
    prices = item_reference_prices(_between(loaded, ref_end - 28 * DAY, ref_end))
    new_prices = parquet_reference_prices(on_disk, ref_end - 28 * DAY, ref_end)
    pd.testing.assert_series_equal(new_prices.sort_index(), prices.sort_index().astype("float64"), check_names=False, check_index_type=False)
    for a, b in ((ref_end - 28 * DAY, ref_end), (start, end)):
        mix = event_mix(_between(loaded, a, b), prices, 0.05)
        new_mix, n = sampled_event_mix(on_disk, a, b, new_prices, 0.05, max_rows, seed)
        assert n == len(mix)
        expected = _sample(mix, max_rows, seed).reset_index(drop=True).astype("string")
        pd.testing.assert_frame_equal(new_mix.astype("string"), expected)


def _content(path) -> dict:
    """weekly_report.json without the timings and file locations."""
    data = json.loads(path.read_text())
    for key in ("seconds", "html"):
        data.pop(key)
    return data


@pytest.mark.parametrize("max_rows", [900, 10**7])
def test_run_weekly_monitoring_reports_what_the_loaded_frames_report(shop, tmp_path, max_rows):
    """The report of run_weekly_monitoring (events and reference left on disk) has the same numbers and decision as
    build_weekly_report on the whole reference and the events loaded in pandas (the path before ParquetEvents),
    prediction log sources included (served inputs, matured ROC-AUC and NDCG)."""
    params = shop["params"].model_copy(deep=True)
    params.monitoring.policy = _policy(params, max_rows)
    fp, policy = params.features, params.monitoring.policy
    week_end = pd.Timestamp("2026-05-04", tz="UTC")
    start, end = week_window(week_end)
    ref_full = pd.read_parquet(shop["reference"])
    columns = feature_columns(fp.windows_days)

    # a columnar prediction log: propensity scores in the week and in the matured week, recommendations there too
    rng = np.random.default_rng(0)
    users = ref_full["user_id"].astype("string").unique()[:300]
    rows = []
    for week_start in (start, end - (fp.horizon_days + 7) * DAY):
        for u in users:
            ts = week_start + pd.Timedelta(seconds=int(rng.integers(0, 7 * 86400)))
            rows.append({"timestamp": ts, "user_id": u, "endpoint": "predict_propensity", "output.probability": float(rng.random()),
                         **{f"features.{c}": float(np.log1p(rng.random() * 5)) for c in columns}})
            rows.append({"timestamp": ts, "user_id": u, "endpoint": "recommend", "output.items": [f"i{k}" for k in rng.integers(0, 150, 10)]})
    log = pd.DataFrame(rows)
    log_dir = tmp_path / "log"
    log_dir.mkdir()

    import monitoring.weekly as weekly

    original = weekly.read_log
    weekly.read_log = lambda *a, **k: log  # the log reader is tested in test_policy.py; here: the same frame both ways
    try:
        new = run_weekly_monitoring(params, shop["project"], week_end=week_end, log_dir=log_dir, out_root=tmp_path / "new",
                                    reference_path=shop["reference"], seed=3)
    finally:
        weekly.read_log = original
    cutoffs = pd.to_datetime(ref_full["cutoff"], utc=True)
    first = min(cutoffs.max() - policy.reference_event_days * DAY, end - fp.lookback_days * DAY, start - (fp.horizon_days + 7) * DAY)
    data_start = pd.read_parquet(shop["events"], columns=["timestamp"])["timestamp"].min()
    old = build_weekly_report(
        week_end=end, reference=ref_full, events=load_events(shop["events"], first, end), feature_params=fp, policy=policy,
        out_root=tmp_path / "old", prediction_log=log, data_start=data_start, reference_name=str(shop["reference"]),
        next_item_types=tuple(params.recommender.event_types), seed=3,
    )
    assert {s.source for s in new.sources} == {"user_features", "event_mix", "served"}
    assert new.quality is not None and new.quality.rows > 0 and new.recommend_quality is not None
    sampled = {s.source: s.sampled for s in new.sources}
    assert sampled["user_features"] == sampled["event_mix"] == (max_rows < 10**6)
    assert _content(tmp_path / "new" / new.week / "weekly_report.json") == _content(tmp_path / "old" / old.week / "weekly_report.json")


def test_without_a_champion_the_reference_is_the_train_split_of_the_feature_table(shop, tmp_path, monkeypatch):
    from monitoring.weekly import champion_reference, champion_reference_source

    # an empty registry: the suite's shared test home holds champions registered by other tests
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "empty-bentoml"))

    path, split, name, tag = champion_reference_source(features_path=shop["reference"])
    assert (path, split, tag) == (shop["reference"], "train", None) and "train split" in name
    whole, _, _ = champion_reference(features_path=shop["reference"])
    sample, n_rows, cutoffs = read_reference(path, feature_columns(shop["params"].features.windows_days), 10**7, 0, split)
    assert n_rows == len(whole) and set(whole["split"]) == {"train"}
    assert cutoffs == sorted(pd.to_datetime(whole["cutoff"], utc=True).unique())
    pd.testing.assert_frame_equal(sample, whole[sample.columns], check_dtype=False)


def test_a_reference_of_another_feature_set_is_named_with_the_fix(tmp_path):
    path = tmp_path / "ref.parquet"
    pd.DataFrame({"cutoff": pd.to_datetime(["2026-01-05"], utc=True), "views_7d": [1.0]}).to_parquet(path)
    with pytest.raises(ValueError, match=r"ref.parquet: missing column.*carts_7d.*windows_days"):
        read_reference(path, ["views_7d", "carts_7d"], 10, 0)
