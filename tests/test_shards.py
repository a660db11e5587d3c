"""User-hash shards on a real 2-worker Dask LocalCluster (processes, 127.0.0.1) give exactly the single-process
results: the propensity dataset, the sequences (item codes included) and the audiences' scores."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from shopsight.config import Params

SIM = {"n_users": 300, "n_items": 80, "n_categories": 6, "days": 84, "seed": 11}
PARAMS = {
    "features": {"windows_days": [7, 28], "horizon_days": 7, "cutoff_step_days": 7, "n_train_cutoffs": 2},
    "recommender": {"max_len": 8},
    "audiences": {"chunk_users": 40, "propensity_top_percent": 20, "high_value_quantile": 0.5, "churn_min_probability": 0.3},
    "orchestration": {"dask": {"n_workers": 2, "partition": True}},
}


def assert_same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Same columns, rows, order, keys, labels and counts; float sums to 1e-12 relative: DuckDB adds floats in
    parallel, so even two single-process runs differ in the last bits of revenue and mean prices (measured ~1e-14)."""
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12, atol=0.0)


def params(**dask) -> Params:
    raw = json.loads(json.dumps(PARAMS))
    raw["orchestration"]["dask"].update(dask)
    return Params.model_validate(raw)


@pytest.fixture(scope="module")
def events_path(tmp_path_factory):
    from shopsight.simulator import SimulatorParams, generate_shop

    result = generate_shop(SimulatorParams(**SIM), tmp_path_factory.mktemp("sim"), progress=False)
    return result.events_path


@pytest.fixture(scope="module")
def client():
    """One real 2-worker LocalCluster (processes, 127.0.0.1) for the module; build_audiences starts its own."""
    from shopsight.shards import dask_client

    with dask_client(params().orchestration.dask) as c:
        assert len(c.scheduler_info()["workers"]) == 2
        yield c


def test_shards_split_every_user_into_one_shard_stably(events_path, tmp_path):
    from shopsight.shards import shard_events, user_shard

    shards = shard_events(events_path, tmp_path, 3, batch_rows=5000)  # several batches: streaming, not one read
    events = pd.read_parquet(events_path)
    parts = [pd.read_parquet(p) for p in shards]
    assert sum(len(p) for p in parts) == len(events)
    owners = pd.concat([p[["user_id"]].drop_duplicates().assign(shard=i) for i, p in enumerate(parts)])
    assert not owners["user_id"].duplicated().any()  # a user's events are all in one shard
    assert all(len(p) for p in parts)
    # each user's events keep their order (what the per-user stages read)
    first = events[events["user_id"] == parts[1]["user_id"].iloc[0]].reset_index(drop=True)
    assert first.equals(parts[1][parts[1]["user_id"] == first["user_id"].iloc[0]].reset_index(drop=True))
    # the same shard in another process (Python's own str hash differs per process; this one must not)
    ids = owners["user_id"].head(50).tolist()
    code = f"from shopsight.shards import user_shard; print(list(user_shard({ids!r}, 3)))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "7"})
    assert eval(other.stdout) == list(user_shard(ids, 3)) == owners.set_index("user_id").loc[ids, "shard"].tolist()


def test_propensity_dataset_on_dask_is_identical(events_path, client):
    from shopsight.features import build_propensity_dataset
    from shopsight.shards import build_propensity_dataset_on_dask

    p = params()
    single = build_propensity_dataset(events_path, p.features)
    sharded = build_propensity_dataset_on_dask(events_path, p, client)
    assert len(single) > 500 and set(single["split"]) == {"train", "valid", "test"}
    assert_same_rows(sharded, single)


def test_sequences_on_dask_are_identical(events_path, client):
    from shopsight.sequences import build_sequences
    from shopsight.shards import build_sequences_on_dask

    p = params(shards=3)  # more shards than workers: items with equal counts spread over every shard
    single = build_sequences(events_path, p.features, p.recommender)
    assert_same_sequences(build_sequences_on_dask(events_path, p, client), single)


def test_sequences_built_shard_after_shard_in_one_process_are_identical(events_path):
    """recommender.build_shards: the shards one after another in this process (bounded memory), no Dask."""
    from shopsight.sequences import (BYTES_PER_EVENT, MEMORY_SHARE, build_sequences, build_shard_count, events_per_build_shard,
                                     load_sequence_events)
    from shopsight.shards import build_sequences_in_shards, last_event_time

    p = params()
    single = build_sequences(events_path, p.features, p.recommender)
    assert_same_sequences(build_sequences_in_shards(events_path, p, 4), single)
    for types in (p.recommender.event_types, ["purchase"]):  # streamed over two columns, exact to the nanosecond
        assert last_event_time(events_path, types) == load_sequence_events(events_path, types)["timestamp"].max()
    rows = pd.read_parquet(events_path, columns=["user_id"]).shape[0]
    assert build_shard_count(events_path, "auto") == 1 and build_shard_count(events_path, 4) == 4
    # auto: as many shards as the machine's memory needs (a tiny machine shards even this log; 24 GiB: ~106M events each)
    assert build_shard_count(events_path, "auto", total_memory=int(rows * BYTES_PER_EVENT / MEMORY_SHARE / 3)) in (3, 4)
    assert 95_000_000 < events_per_build_shard(24 * 2**30) < 115_000_000


def assert_same_sequences(sharded, single) -> None:
    assert sharded.vocab.items == single.vocab.items  # every item has the same code
    counts = pd.Series(single.train_counts[1:])
    assert counts.duplicated().any()  # ties in training frequency exist, so the tie order was exercised
    for name in ("train_inputs", "train_targets", "train_counts", "transitions", "latest_popularity"):
        np.testing.assert_array_equal(getattr(sharded, name), getattr(single, name), err_msg=name)
    for split in ("valid", "test"):
        a, b = getattr(sharded, split), getattr(single, split)
        assert a.cutoff == b.cutoff and len(b.user_ids) > 20
        for name in ("user_ids", "inputs", "targets", "purchased_indptr", "purchased_indices", "popularity"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=f"{split}.{name}")


def _store_logistic(model_dir, columns, weights):
    """A fixed logistic champion (the cheapest family to get in a test: no training), loaded like any family."""
    from shopsight.calibration import Calibrator
    from shopsight.candidates import get_model, save_candidate

    model = get_model("user_binary", "logistic_regression")
    model.coef = {"mean": [0.0] * len(columns), "scale": [1.0] * len(columns), "coef": [float(w) for w in weights], "intercept": -1.0}
    save_candidate(model, model_dir)
    (model_dir / "feature_columns.json").write_text(json.dumps(columns))
    (model_dir / "task.json").write_text(json.dumps({"horizon_days": 7}))
    Calibrator("none").to_json(model_dir / "calibration.json")


def test_audiences_on_dask_are_identical(events_path, client, tmp_path, monkeypatch):
    from shopsight.audiences import build_audiences
    from shopsight.features import feature_columns

    cols = feature_columns([7, 28])
    weights = np.linspace(-0.3, 0.3, len(cols))
    monkeypatch.chdir(tmp_path)
    _store_logistic(tmp_path / "artifacts" / "propensity", cols, weights)
    _store_logistic(tmp_path / "artifacts" / "churn", cols, weights[::-1])

    from shopsight.audiences import score_active_users
    from shopsight.features import event_time_span
    from shopsight.shards import score_users_on_dask
    from shopsight.tasks.user_binary import ChampionScorer

    as_of = event_time_span(events_path)[1].ceil("D")
    prop, churn = tmp_path / "artifacts" / "propensity", tmp_path / "artifacts" / "churn"
    every = score_active_users(events_path, as_of, params(), ChampionScorer(prop), ChampionScorer(churn))
    assert len(every) > 100
    assert_same_rows(score_users_on_dask(events_path, as_of, params(), prop, churn, client), every)

    # the stage's own hook (orchestration.dask.partition) on a cluster of its own
    one = build_audiences(params(partition=False), events_path=events_path, out_dir=tmp_path / "one", from_artifacts=True)
    many = build_audiences(params(), events_path=events_path, out_dir=tmp_path / "many", from_artifacts=True)
    for name in one:
        a, b = pd.read_parquet(many[name]["parquet"]), pd.read_parquet(one[name]["parquet"])
        assert len(b) > 3, name
        assert_same_rows(a, b)


def test_ingest_of_many_files_on_dask_is_identical(events_path, client, tmp_path, monkeypatch):
    """Three CSV files of one log (users span files; no session ids, so sessions are derived across files; a row
    duplicated across files; a bad row): read on the workers, finalised together, the same events and counts."""
    from shopsight.ingest import ingest, load_events
    from shopsight.shards import ingest_files_on_dask

    events = pd.read_parquet(events_path).drop(columns=["session_id"]).head(6000)
    raw = tmp_path / "raw"
    raw.mkdir()
    parts = [events.iloc[i * 2000 : (i + 1) * 2000] for i in range(3)]
    parts[2] = pd.concat([parts[2], parts[0].head(5), parts[0].head(1).assign(event_type="bogus")])
    for i, part in enumerate(parts):
        part.to_csv(raw / f"part-{i}.csv", index=False)
    p = params().model_copy(update={"data": Params.model_validate({"data": {"source": "generic", "path": str(raw / "part-*.csv")}}).data})

    results = {}
    for name, run in (("one", ingest), ("many", lambda p: ingest_files_on_dask(p, client))):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        report = run(p)
        columns = sorted(load_events().columns)
        results[name] = (report, load_events().sort_values(columns, ignore_index=True))
    (one, single), (many, sharded) = results["one"], results["many"]
    assert (many.rows_in, many.rows_out, many.rejected, many.duplicates_removed, many.users, many.items) == (
        one.rows_in, one.rows_out, one.rejected, one.duplicates_removed, one.users, one.items)
    assert one.rejected == 1 and one.duplicates_removed == 5 and one.sessions_derived
    pd.testing.assert_frame_equal(sharded, single, check_exact=True)
