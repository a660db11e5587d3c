"""User-partitioned work on Dask: canonical events split by a stable hash of user_id, each shard processed by the
same single-machine code, the parts combined into what one process builds: the same rows in the same order (float
sums agree to their last bits, which DuckDB's parallel sums vary between two single-process runs too).

    orchestration.dask.partition: true   # features, sequences and audiences scoring fan out (default false)
    orchestration.dask.shards: 0         # shards; 0 = one per worker
    orchestration.dask.address: null     # a LocalCluster on 127.0.0.1, or an existing scheduler

Every stage below is per user once its global inputs are known, so a stage is: the global inputs first (the
cutoffs from the whole log's time span; for sequences the item vocabulary, a reduce of per-shard item counts),
then one Dask task per shard running the stage's own function, then a concatenation in the single-process order.
An ingest of many files (data.path a list or a glob) fans out one file per task, then finalises once.
tests/test_shards.py proves the results identical to the single-process run on a 2-worker LocalCluster.

Each `*_on_dask` function takes an existing `client`, or starts `dask_client(orchestration.dask)` for its call.
On a real cluster the shard files (orchestration.dask.shard_dir) and the models must be on storage every worker
reads, like the project for flows/sweep.py.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from shopsight.config import DaskParams, Params

if TYPE_CHECKING:
    from distributed import Client

    from shopsight.sequences import EvalSplit, SequenceData

SHARD_BATCH_ROWS = 1_000_000  # rows read at a time while sharding: memory is bounded by this, not by the file


# ------------------------------------------------------------------------------------------- the engine
@contextmanager
def dask_client(params: DaskParams) -> Iterator["Client"]:
    """A Dask client on the scheduler at `dask_address(params)`, else on a fresh LocalCluster (params.n_workers
    processes of params.threads_per_worker threads, default 1, bound to 127.0.0.1, no dashboard); closed, with the
    cluster, on leaving the block."""
    from distributed import Client, LocalCluster

    from shopsight.orchestration import dask_address

    address = dask_address(params)
    if address:
        with Client(address) as client:
            yield client
        return
    with LocalCluster(
        n_workers=params.n_workers, threads_per_worker=params.threads_per_worker, processes=True, host="127.0.0.1", dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},  # its remaining HTTP routes on a free port, not :8787
    ) as cluster, Client(cluster) as client:
        yield client


@contextmanager
def _client_for(params: DaskParams, client: "Client | None") -> Iterator["Client"]:
    """The caller's client, or dask_client(params) for the duration of the block."""
    if client is not None:
        yield client
        return
    with dask_client(params) as own:
        yield own


def shard_count(params: DaskParams, client: "Client") -> int:
    """orchestration.dask.shards, or one shard per worker of the cluster when it is 0."""
    return params.shards or max(1, len(client.scheduler_info()["workers"]))


def user_shard(user_ids, n_shards: int) -> np.ndarray:
    """The shard (0..n_shards-1) of each user id: pandas' fixed-key hash of the id's text, the same in every process
    and run (Python's own hash() is salted per process)."""
    values = np.asarray(pd.array(user_ids, dtype="string").astype(object), dtype=object)
    return (pd.util.hash_array(values, categorize=False) % np.uint64(n_shards)).astype(np.int64)


def shard_events(events_parquet: str | Path, out_dir: str | Path, n_shards: int, batch_rows: int = SHARD_BATCH_ROWS) -> list[Path]:
    """Split canonical events into `n_shards` Parquet files by user_shard(user_id), streaming batch by batch (memory
    bounded by `batch_rows`, not by the file). Every user's events land in one shard in their original order.
    Returns the shard paths (a shard without users is an empty file with the events' schema)."""
    import pyarrow.parquet as pq

    if n_shards < 1:
        raise ValueError(f"shard_events: n_shards must be at least 1 (orchestration.dask.shards), got {n_shards}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = pq.ParquetFile(events_parquet)
    shard_paths = [out / f"shard-{i:04d}.parquet" for i in range(n_shards)]
    writers = [pq.ParquetWriter(path, source.schema_arrow) for path in shard_paths]
    try:
        for batch in source.iter_batches(batch_size=batch_rows):
            shard = user_shard(batch.column("user_id").to_pandas(), n_shards)
            for i, writer in enumerate(writers):
                part = batch.filter(shard == i)
                if part.num_rows:
                    writer.write_batch(part)
    finally:
        for writer in writers:
            writer.close()
    return shard_paths


@contextmanager
def sharded_events(events_path: str | Path, params: DaskParams, client: "Client") -> Iterator[list[Path]]:
    """The events' user-hash shards for the duration of the block: under orchestration.dask.shard_dir (kept, for
    workers on other machines) or in a temporary folder (removed)."""
    n = shard_count(params, client)
    if params.shard_dir:
        yield shard_events(events_path, Path(params.shard_dir).resolve(), n)
        return
    tmp = Path(tempfile.mkdtemp(prefix="shopsight-shards-"))
    try:
        yield shard_events(events_path, tmp, n)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -------------------------------------------------------------------------------------------- features
def build_propensity_dataset_on_dask(events_path: str | Path, params: Params, client: "Client | None" = None) -> pd.DataFrame:
    """shopsight.features.build_propensity_dataset by user-hash shards: the cutoffs from the whole log's span, then
    `propensity_rows` of each shard's users on a Dask worker; rows in the single-process order."""
    from shopsight.features import check_propensity_splits, propensity_cutoffs, propensity_rows

    split_of = propensity_cutoffs(events_path, params.features)  # the global span: every shard uses the same cutoffs
    with _client_for(params.orchestration.dask, client) as client, sharded_events(events_path, params.orchestration.dask, client) as shards:
        parts = client.gather(client.map(propensity_rows, [str(p) for p in shards], split_of=split_of, params=params.features))
    return check_propensity_splits(_in_feature_order(parts, list(split_of), params.features.windows_days))


def _in_feature_order(parts: list[pd.DataFrame], cutoffs: list[pd.Timestamp], windows_days: list[int]) -> pd.DataFrame:
    """Shards' feature rows in the order compute_user_features gives one process: its cutoff batches in turn, then
    cutoff, then user_id."""
    from shopsight.feature_sql import plan_batches

    frame = pd.concat([p for p in parts if len(p)] or parts[:1], ignore_index=True)  # an empty shard's dtypes never count
    rank = {c: i for i, c in enumerate(c for plan in plan_batches(cutoffs, windows_days) for c in plan.cutoffs)}
    keys = pd.DataFrame({"batch": frame["cutoff"].map(rank).to_numpy(), "user_id": frame["user_id"].to_numpy(dtype=object)})
    order = keys.sort_values(["batch", "user_id"], kind="stable").index.to_numpy()
    return frame.iloc[order].reset_index(drop=True)


# ------------------------------------------------------------------------------------------- sequences
def _load_sequence_shard(path: str, event_types: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    from shopsight.sequences import load_sequence_events, time_protocol_frames

    return time_protocol_frames(load_sequence_events(Path(path), event_types))


def _shard_end(loaded: tuple[pd.DataFrame, pd.DataFrame]) -> pd.Timestamp | None:
    events = loaded[0]
    return events["timestamp"].max() if len(events) else None


def _train_item_counts(loaded: tuple[pd.DataFrame, pd.DataFrame], valid_cutoff: pd.Timestamp) -> pd.DataFrame:
    """A shard's training item counts in order of first appearance, with where each item first appears (user,
    position in the user's rows): enough to rebuild the whole log's first-appearance order."""
    from shopsight.sequences import training_ids

    train = training_ids(loaded[1], valid_cutoff)
    counts = train["item_id"].value_counts(sort=False)
    first = train.reset_index(drop=True).drop_duplicates("item_id")  # each item's first row, positions 0..len-1
    user_start = pd.Series(np.arange(len(train)), index=train["user_id"].to_numpy()).groupby(level=0).min()
    return pd.DataFrame({
        "item_id": first["item_id"].to_numpy(dtype=object),
        "count": counts.loc[first["item_id"].to_numpy()].to_numpy(),
        "first_user": first["user_id"].to_numpy(dtype=object),
        "first_pos": first.index.to_numpy() - user_start.loc[first["user_id"].to_numpy()].to_numpy(),
    })


def _global_vocabulary(parts: list[pd.DataFrame], dtype) -> "ItemVocabulary":  # noqa: F821
    """ItemVocabulary.from_counts(train["item_id"].value_counts()) of the whole log from the shards' counts:
    summed, in the whole log's order of first appearance (users in order, then their rows), sorted as value_counts
    sorts (so items with equal counts get the same indices as in one process)."""
    from shopsight.sequences import ItemVocabulary

    frame = pd.concat(parts, ignore_index=True)
    totals = frame.groupby("item_id", sort=False)["count"].sum()
    firsts = frame.sort_values(["first_user", "first_pos"], kind="stable")
    order = firsts.drop_duplicates("item_id")["item_id"].to_numpy(dtype=object)
    counts = pd.Series(totals.loc[order].to_numpy().astype(dtype), index=pd.Index(order, name="item_id"), name="count")
    return ItemVocabulary.from_counts(counts.sort_values(ascending=False))


def _sequence_part(loaded, vocab, valid_cutoff, test_cutoff, t_end, features, params) -> dict:
    """One shard's training sequences (users sorted), valid/test rows and popularity counts: sequences.py's code."""
    from shopsight.sequences import _eval_split, _popularity, training_ids, user_sequences

    events, collapsed = loaded
    train = training_ids(collapsed, valid_cutoff)
    users, sequences = user_sequences(train, vocab)
    return {
        "users": np.asarray(users, dtype=object),
        "sequences": sequences,
        "valid": _eval_split(events, collapsed, vocab, valid_cutoff, features.horizon_days, params),
        "test": _eval_split(events, collapsed, vocab, test_cutoff, features.horizon_days, params),
        "latest": _popularity(events, vocab, t_end.ceil("D"), params.popularity_window_days),
    }


def _merge_eval_splits(splits: list["EvalSplit"]) -> "EvalSplit":
    """One EvalSplit from the shards' (rows sorted by user id, popularity summed)."""
    from shopsight.sequences import EvalSplit, csr_rows

    user_ids = np.concatenate([s.user_ids for s in splits])
    order = np.argsort(user_ids, kind="stable")
    offsets = np.cumsum([0] + [int(s.purchased_indptr[-1]) for s in splits[:-1]])
    joined_ptr = np.concatenate([[0]] + [s.purchased_indptr[1:] + o for s, o in zip(splits, offsets)]).astype(np.int64)
    indptr, indices = csr_rows(joined_ptr, np.concatenate([s.purchased_indices for s in splits]), order)
    return EvalSplit(
        cutoff=splits[0].cutoff,
        user_ids=user_ids[order],
        inputs=np.concatenate([s.inputs for s in splits])[order],
        targets=np.concatenate([s.targets for s in splits])[order],
        purchased_indptr=indptr,
        purchased_indices=indices,
        popularity=np.sum([s.popularity for s in splits], axis=0),
    )


def build_sequences_on_dask(events_path: str | Path, params: Params, client: "Client | None" = None) -> "SequenceData":
    """shopsight.sequences.build_sequences (protocol `time`) by user-hash shards. Each shard's events stay in its
    worker's memory across three passes: the last event time (a max), the training item counts (the vocabulary, a
    global reduce so every item gets the index one process gives it), then the shard's sequences and valid/test rows
    with that vocabulary. The combined arrays equal the single-process ones, row for row."""
    features, rec = params.features, params.recommender
    if rec.protocol != "time":
        raise ValueError(f"recommender.protocol={rec.protocol!r}: sharded sequences support protocol `time`; "
                         "set orchestration.dask.partition: false for leave_one_out")
    with _client_for(params.orchestration.dask, client) as client, sharded_events(events_path, params.orchestration.dask, client) as shards:
        loaded = client.map(_load_sequence_shard, [str(p) for p in shards], event_types=list(rec.event_types))
        ends = client.gather(client.map(_shard_end, loaded))
        t_end, valid_cutoff, test_cutoff = _cutoffs_or_error(ends, events_path, features, rec.event_types)
        counts = client.gather(client.map(_train_item_counts, loaded, valid_cutoff=valid_cutoff))
        vocab = _vocabulary_or_error(counts, events_path, valid_cutoff)
        vocab_future = client.scatter(vocab, broadcast=True)
        parts = client.gather(client.map(
            _sequence_part, loaded, vocab=vocab_future, valid_cutoff=valid_cutoff, test_cutoff=test_cutoff, t_end=t_end,
            features=features, params=rec,
        ))
    return _combine_sequence_parts(parts, vocab, rec, events_path)


def _cutoffs_or_error(ends: list, events_path, features, event_types) -> tuple[pd.Timestamp, pd.Timestamp, pd.Timestamp]:
    """(t_end, valid cutoff, test cutoff) from the shards' last event times."""
    from shopsight.features import plan_cutoffs

    ends = [t for t in ends if t is not None]
    if not ends:
        raise ValueError(f"{events_path}: no events of types {event_types} (recommender.event_types in params.yaml)")
    t_end = max(ends)
    cutoffs = plan_cutoffs(t_end, features)
    return t_end, cutoffs["valid"][-1], cutoffs["test"][0]


def _vocabulary_or_error(counts: list[pd.DataFrame], events_path, valid_cutoff) -> "ItemVocabulary":  # noqa: F821
    if sum(len(c) for c in counts) == 0:
        raise ValueError(
            f"{events_path}: no events before the validation cutoff {valid_cutoff.date()}; the data span is too short "
            "for features.horizon_days in params.yaml"
        )
    return _global_vocabulary(counts, next(c["count"].dtype for c in counts if len(c)))


def _combine_sequence_parts(parts: list[dict], vocab, rec, events_path) -> "SequenceData":
    """The shards' parts in the single-process order: training windows of every user's sequence (users sorted),
    valid/test rows merged by user id, popularity summed."""
    from shopsight.sequences import SequenceData, training_arrays

    users = np.concatenate([p["users"] for p in parts])
    sequences = [seq for p in parts for seq in p["sequences"]]
    sequences = [sequences[i] for i in np.argsort(users, kind="stable")]
    inputs, targets, train_counts, transitions = training_arrays(sequences, vocab.size, rec.max_len)
    valid, test = _merge_eval_splits([p["valid"] for p in parts]), _merge_eval_splits([p["test"] for p in parts])
    for name, split in (("valid", valid), ("test", test)):
        if len(split.targets) == 0:
            raise ValueError(f"{events_path}: no user is active both before and after the {name} cutoff {split.cutoff.date()}")
    latest = np.sum([p["latest"] for p in parts], axis=0)
    return SequenceData(vocab, inputs, targets, train_counts, transitions, valid, test, latest, rec.max_len, "time")


def last_event_time(events_path: str | Path, event_types: list[str]) -> pd.Timestamp | None:
    """The last time of an event of `event_types` in the events file, streamed in record batches (two columns, exact
    to the nanosecond): what load_sequence_events(...)["timestamp"].max() gives, without loading or sorting."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    wanted = pa.array(list(event_types))
    last = None
    for batch in pq.ParquetFile(events_path).iter_batches(batch_size=SHARD_BATCH_ROWS, columns=["timestamp", "event_type"]):
        kinds = batch.column("event_type")
        if pa.types.is_dictionary(kinds.type):
            kinds = kinds.cast(pa.string())
        times = batch.column("timestamp").filter(pc.is_in(kinds, value_set=wanted))
        value = pc.max(times.cast(pa.timestamp("ns", tz=times.type.tz))).value
        if value is not None:
            last = value if last is None else max(last, value)
    return None if last is None else pd.Timestamp(last, unit="ns", tz="UTC")


def build_sequences_in_shards(events_path: str | Path, params: Params, n_shards: int) -> "SequenceData":
    """shopsight.sequences.build_sequences (protocol `time`) in this process, one user-hash shard at a time: the same
    three passes as build_sequences_on_dask, but a shard's events are read again for each pass instead of being held
    (except the first pass's last shard, which the second pass starts with), so the peak holds one shard's events (about 1/n_shards of the log) plus the compact parts. The same arrays as
    one pass over the whole log (recommender.build_shards)."""
    import gc

    features, rec = params.features, params.recommender
    tmp = Path(tempfile.mkdtemp(prefix="shopsight-sequence-shards-"))
    try:
        shards = [str(p) for p in shard_events(events_path, tmp, n_shards)]

        kept: dict[str, tuple] = {}

        def each(fn, paths: list[str], keep_last: bool = False, **kwargs) -> list:
            out = []
            for path in paths:
                loaded = kept.pop(path, None) or _load_sequence_shard(path, list(rec.event_types))
                out.append(fn(loaded, **kwargs))
                if keep_last and path == paths[-1]:
                    kept[path] = loaded  # the second pass starts with it: one load fewer
                del loaded
                gc.collect()
            return out

        t_end, valid_cutoff, test_cutoff = _cutoffs_or_error([last_event_time(events_path, rec.event_types)], events_path,
                                                             features, rec.event_types)
        vocab = _vocabulary_or_error(each(_train_item_counts, shards, keep_last=True, valid_cutoff=valid_cutoff), events_path,
                                     valid_cutoff)
        # the parts in reverse (the kept shard first): _combine_sequence_parts orders users itself
        parts = each(_sequence_part, shards[::-1], vocab=vocab, valid_cutoff=valid_cutoff, test_cutoff=test_cutoff,
                     t_end=t_end, features=features, params=rec)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _combine_sequence_parts(parts, vocab, rec, events_path)


# ------------------------------------------------------------------------------------------- audiences
def _score_shard(path: str, as_of: pd.Timestamp, params: Params, propensity_dir: str, churn_dir: str) -> pd.DataFrame | None:
    from shopsight.audiences import score_active_users
    from shopsight.tasks.user_binary import ChampionScorer

    return score_active_users(Path(path), as_of, params, ChampionScorer(Path(propensity_dir)), ChampionScorer(Path(churn_dir)))


def score_users_on_dask(events_path: str | Path, as_of: pd.Timestamp, params: Params, propensity_dir: Path, churn_dir: Path,
                        client: "Client | None" = None) -> pd.DataFrame | None:
    """shopsight.audiences.score_active_users by user-hash shards: each worker loads the champions and scores its
    shard's users; rows by user_id as in one process (None when no user is active)."""
    with _client_for(params.orchestration.dask, client) as client, sharded_events(events_path, params.orchestration.dask, client) as shards:
        parts = client.gather(client.map(
            _score_shard, [str(p) for p in shards], as_of=as_of, params=params,
            propensity_dir=str(Path(propensity_dir).resolve()), churn_dir=str(Path(churn_dir).resolve()),
        ))
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    users = pd.concat(parts, ignore_index=True)
    return users.iloc[np.argsort(users["user_id"].to_numpy(dtype=object), kind="stable")].reset_index(drop=True)


# -------------------------------------------------------------------------------------- ingest of many files
def _stage_file(file: str, index: int, params: Params, out_dir: str) -> dict:
    """One source file read and checked against the contract, as shopsight.ingest.ingest does chunk by chunk:
    valid rows to <out_dir>/valid-<index>.parquet, rejects to rejects-<index>.parquet, and the counts.

    Each chunk is checked by ingest's own check_chunk."""
    import gc
    from collections import Counter

    import pyarrow.parquet as pq

    from shopsight.ingest import REJECTS_ARROW, check_chunk
    from shopsight.schema import CANONICAL_ARROW
    from shopsight.sources import read_source

    data, source = params.data, str(params.data.path)  # rejects name the configured source, as in one process
    valid_path, rejects_path = Path(out_dir) / f"valid-{index:05d}.parquet", Path(out_dir) / f"rejects-{index:05d}.parquet"
    counts = {"rows_in": 0, "rejected": 0, "staged": 0, "staged_without_session": 0, "reasons": Counter()}
    with pq.ParquetWriter(valid_path, CANONICAL_ARROW) as valid_writer, pq.ParquetWriter(rejects_path, REJECTS_ARROW) as reject_writer:
        for chunk in read_source(data.source, file, chunksize=data.chunksize, options=data.options, raw=True):
            checked = check_chunk(chunk, source=source, params=params)
            counts["rows_in"] += checked.rows_in
            if checked.valid is not None:
                valid_writer.write_table(checked.valid)
                counts["staged"] += checked.valid.num_rows
                counts["staged_without_session"] += checked.without_session
            if checked.rejects is not None:
                reject_writer.write_table(checked.rejects)
                counts["rejected"] += checked.rejects.num_rows
                counts["reasons"].update(checked.reasons)
            del chunk, checked
            gc.collect()  # one chunk's worth of memory per worker, as in ingest
    return {**counts, "valid": str(valid_path), "rejects": str(rejects_path)}


def _concatenate_parquet(parts: list[str], out: Path, schema) -> None:
    """The parts' rows, in order, into one Parquet file, row group by row group (memory: one row group)."""
    import pyarrow.parquet as pq

    with pq.ParquetWriter(out, schema) as writer:
        for part in parts:
            source = pq.ParquetFile(part)
            for i in range(source.num_row_groups):
                writer.write_table(source.read_row_group(i))


def ingest_files_on_dask(params: Params, client: "Client | None" = None):
    """shopsight.ingest.ingest for a source of many files (data.path a list or a glob): each file read and checked
    on a Dask worker, then the staged rows of every file finalised together in one pass (deduplication across
    files, sessions, pseudonyms, the sort), so events.parquet is the one a single process writes. Finalising is
    ingest's own (`_finalise`, one DuckDB pass, out of core): only reading and checking fan out."""
    import json
    from collections import Counter
    from dataclasses import asdict

    from shopsight import ingest as ingest_module
    from shopsight import paths
    from shopsight.ingest import REJECTS_ARROW, IngestError, IngestReport
    from shopsight.schema import CANONICAL_ARROW
    from shopsight.sources.reading import resolve_paths

    if params.data.source == "synthetic":
        raise ValueError("data.source=synthetic has no files to fan out: run `shopsight ingest`")
    files = [str(f.resolve()) for f in resolve_paths(params.data.path, kind=params.data.source)]
    paths.STAGING_EVENTS.parent.mkdir(parents=True, exist_ok=True)
    paths.REJECTS.parent.mkdir(parents=True, exist_ok=True)
    staging_dir = Path(tempfile.mkdtemp(prefix="parts-", dir=paths.STAGING_EVENTS.parent)).resolve()
    try:
        with _client_for(params.orchestration.dask, client) as client:
            parts = client.gather(client.map(_stage_file, files, range(len(files)), params=params, out_dir=str(staging_dir)))
        report = IngestReport(source=str(params.data.path), drop_duplicates=params.ingest.drop_duplicates)
        reasons: Counter[str] = Counter()
        for part in parts:
            report.rows_in += part["rows_in"]
            report.rejected += part["rejected"]
            reasons.update(part["reasons"])
        tmp_rejects = paths.REJECTS.with_suffix(".parquet.tmp")
        _concatenate_parquet([p["rejects"] for p in parts], tmp_rejects, REJECTS_ARROW)
        os.replace(tmp_rejects, paths.REJECTS)
        report.rejects_by_reason = dict(reasons.most_common())
        staged = sum(p["staged"] for p in parts)
        if staged == 0:
            raise IngestError(ingest_module._nothing_valid_message(params, report))
        _concatenate_parquet([p["valid"] for p in parts], paths.STAGING_EVENTS, CANONICAL_ARROW)
    finally:
        shutil.rmtree(staging_dir, ignore_errors=True)
    ingest_module._finalise(params, report, staged=staged, staged_without_session=sum(p["staged_without_session"] for p in parts))
    ingest_module._publish_truth(params)
    paths.INGEST_REPORT.parent.mkdir(parents=True, exist_ok=True)
    paths.INGEST_REPORT.write_text(json.dumps(asdict(report), indent=2))
    return report
