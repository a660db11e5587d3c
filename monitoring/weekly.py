"""The weekly monitoring report: Evidently drift of the champion's reference against what the service saw and
against the events that arrived, model quality once outcomes are known, and the policy's decision.

Sources, each compared with the champion's training window (the reference):
* `user_features`: user features recomputed at the week's end from the events (the training feature code);
* `event_mix`: the week's events (category, event type, price move against the item's reference price)
  against the events of the reference window;
* `served`: the model inputs and the output the prediction log recorded for the week (prediction drift);
* `quality`: ROC-AUC of logged propensity predictions whose horizon has ended, against the purchases;
* `recommend_quality`: NDCG@k and HR@k of logged /recommend answers against each user's next item
  (monitoring/recommend_quality.py), reported next to the ROC-AUC (it does not decide a propensity retrain).

Output under `<out_root>/<ISO week>/`: one HTML report per source, `weekly_report.json` (every score,
the decision and its reasons). Each side is sampled down to `monitoring.policy.max_rows` rows: the
distances used (normed Wasserstein, Jensen-Shannon) are means over the distribution, whose sampling error
at 50,000 rows is far below the thresholds, so sampling does not change a decision (the JSON says when).

Memory: run_weekly_monitoring leaves the events in the Parquet file (ParquetEvents) and reads the reference's
sampled rows only (read_reference). The current user features come from the platform's DuckDB feature SQL over the
file (build_user_features on a filtered relation), one history part at a time, keeping only the rows the drift
report samples; reference prices and the event mix are computed in record batches, decoding only the sampled
rows; the matured-outcome sources read the logged users' events of their three weeks. The rows kept are those
pandas' seeded sample takes of the loaded frames, so the report is the same (tests/test_weekly_parquet.py).
Measured with bench/bench_scale.py (weekly_report stage, peak RSS): 1M events 0.72 -> 0.66 GiB, 3M 1.02 -> 0.70 GiB.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from monitoring.drift import _column_drifted
from monitoring.policy import ColumnDrift, Decision, QualityCheck, SourceDrift, column_tests, counted_features, decide
from shopsight.config import DriftPolicyParams, FeatureParams
from shopsight.feature_sql import connection
from shopsight.features import build_user_features, feature_columns

log = logging.getLogger(__name__)
DAY = pd.Timedelta(days=1)
EVENT_COLUMNS = ["event_category", "event_type", "event_price_change"]
PREDICTION_COLUMN = "prediction"
# only the plain scoring endpoint: /explain_propensity logs the same users' scores without the feature vector
PROPENSITY_ENDPOINT = "predict_propensity"


def week_window(week_end: Any) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) of the week ending at `week_end` (a date or timestamp; midnight UTC of that day)."""
    end = pd.Timestamp(week_end)
    end = (end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")).normalize()
    return end - 7 * DAY, end


def week_label(week_end: Any) -> str:
    """ISO week of the week's last day, e.g. 2026-W12 (the folder name under monitoring/reports)."""
    start, end = week_window(week_end)
    year, week, _ = (end - DAY).isocalendar()
    return f"{year}-W{week:02d}"


def last_completed_week_end(now: Any = None) -> pd.Timestamp:
    """Monday 00:00 UTC of the current week: the end of the week that ended most recently."""
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    now = now.tz_localize("UTC") if now.tzinfo is None else now.tz_convert("UTC")
    return now.normalize() - now.weekday() * DAY


def default_week_end(events_path: str | Path, now: Any = None) -> pd.Timestamp:
    """The week to report on when none is given: the last completed ISO week, or, when the events end before it
    (the embedded shop, a historical file), the last complete week of the data, so the report has rows to judge.
    The day of the last event counts as observed."""
    data_end = event_time_range(events_path)[1]
    return min(last_completed_week_end(now), last_completed_week_end(data_end.normalize() + DAY))


def _sample(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    return frame.sample(n=n, random_state=seed) if len(frame) > n else frame


def sample_positions(n_rows: int, n: int, seed: int) -> np.ndarray | None:
    """The row positions, in their drawn order, that `_sample` (pandas' `frame.sample(n=n, random_state=seed)`) keeps
    of `n_rows` rows; None when it keeps them all. Drawing them first lets a source read only those rows."""
    if n_rows <= n:
        return None
    return np.random.RandomState(seed).choice(n_rows, size=n, replace=False).astype(np.intp, copy=False)


def _take_rows(batches, positions: np.ndarray | None, columns: list[str], what: str) -> pd.DataFrame:
    """The rows at `positions` (0-based over the batches' rows, in their order) of record batches, in the order of
    `positions`, as pandas; every row when None. Only the taken rows of each batch are kept."""
    import pyarrow as pa

    if positions is None:
        parts = list(batches)
    else:
        order = np.argsort(positions, kind="stable")
        wanted = positions[order]
        parts, offset, k = [], 0, 0
        for batch in batches:
            stop = int(np.searchsorted(wanted, offset + batch.num_rows, side="left"))
            if stop > k:
                parts.append(batch.take(pa.array(wanted[k:stop] - offset)))
            k, offset = stop, offset + batch.num_rows
        if k != len(wanted):
            raise RuntimeError(f"{what}: {len(wanted) - k} sampled positions beyond its {offset} rows")
    table = pa.Table.from_batches(parts) if parts else None
    if table is None:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    if positions is not None:
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        table = table.take(pa.array(back))
    return table.to_pandas()


@dataclass(frozen=True)
class ParquetEvents:
    """The canonical events of a Parquet file with start <= timestamp < end (what `load_events(path, start, end)`
    returns), read where they are needed instead of held in pandas: user features by the platform's DuckDB
    feature SQL over the file, reference prices and the event mix in record batches, the matured-outcome sources
    from their own window only. build_weekly_report gives the same report from this as from the loaded frame."""

    path: Path
    start: pd.Timestamp
    end: pd.Timestamp

    def relation(self, start: pd.Timestamp | None = None):
        """The events from max(start, self.start) on, as a DuckDB relation on the feature SQL's connection (what
        compute_user_features registers in place of a frame)."""
        low = self.start if start is None else max(self.start, start)
        return connection().sql(
            f"SELECT * FROM read_parquet('{Path(self.path).as_posix()}') "
            f"WHERE timestamp >= '{low.isoformat()}'::TIMESTAMPTZ AND timestamp < '{self.end.isoformat()}'::TIMESTAMPTZ"
        )

    def batches(self, start: pd.Timestamp, end: pd.Timestamp, columns: list[str], users: Sequence[str] | None = None):
        """Record batches (file order, the rows load_events would return) with start <= timestamp < end within this
        window (and `users`' events only, when given), holding `columns`; only the row groups whose statistics meet
        the window are read."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        start, end = max(start, self.start), min(end, self.end)
        file = pq.ParquetFile(self.path)
        meta = file.metadata
        col = meta.schema.to_arrow_schema().get_field_index("timestamp")
        groups = []
        for i in range(meta.num_row_groups):
            stats = meta.row_group(i).column(col).statistics
            if stats is not None and stats.has_min_max and (pd.Timestamp(stats.max) < start or pd.Timestamp(stats.min) >= end):
                continue
            groups.append(i)
        if not groups or start >= end:
            return
        read = list(dict.fromkeys([*columns, "timestamp", *(["user_id"] if users is not None else [])]))
        wanted = None if users is None else pa.array(pd.unique(np.asarray(users, dtype=object)), type=pa.string())
        for batch in file.iter_batches(row_groups=groups, columns=read):
            ts = batch.column("timestamp")
            low, high = pa.scalar(start, type=ts.type), pa.scalar(end, type=ts.type)
            mask = pc.and_(pc.greater_equal(ts, low), pc.less(ts, high))
            if wanted is not None:
                mask = pc.and_(mask, pc.is_in(pc.cast(batch.column("user_id"), pa.string()), value_set=wanted))
            kept = batch.filter(mask)
            if kept.num_rows:
                yield kept.select(columns)

    def count(self, start: pd.Timestamp, end: pd.Timestamp) -> int:
        return sum(b.num_rows for b in self.batches(start, end, ["timestamp"]))

    def rows(self, start: pd.Timestamp, end: pd.Timestamp, columns: list[str], positions: np.ndarray | None) -> pd.DataFrame:
        """The events with start <= timestamp < end at `positions` (0-based among them, in file order), in the order of
        `positions`; all of them when None. One record batch at a time is decoded."""
        return _take_rows(self.batches(start, end, columns), positions, columns, f"{self.path} [{start}, {end})")

    def frame(self, start: pd.Timestamp, end: pd.Timestamp, columns: list[str], users: Sequence[str] | None = None) -> pd.DataFrame:
        """The events of [start, end) within this window (of `users` only, when given), `columns` only, in pandas."""
        return _take_rows(self.batches(start, end, columns, users), None, columns, f"{self.path} [{start}, {end})")


def run_drift(
    source: str,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numerical: list[str],
    categorical: list[str],
    policy: DriftPolicyParams,
    counted: list[str],
    critical: list[str] | None = None,
    excluded: dict[str, str] | None = None,
    timestamp: datetime | None = None,
    tags: list[str] | None = None,
    seed: int = 0,
):
    """Evidently drift report of one source with the policy's test per column; returns (snapshot, SourceDrift)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = numerical + categorical
    sampled = len(reference) > policy.max_rows or len(current) > policy.max_rows
    ref = _sample(reference[columns], policy.max_rows, seed).reset_index(drop=True)
    cur = _sample(current[columns], policy.max_rows, seed).reset_index(drop=True)
    drift = SourceDrift(source, len(ref), len(cur), sampled, [], counted, critical or [], excluded or {})
    if len(ref) == 0 or len(cur) == 0:
        return None, drift
    for frame in (ref, cur):
        frame[numerical] = frame[numerical].astype("float64")
        frame[categorical] = frame[categorical].astype("string").fillna("missing")
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    methods, thresholds = column_tests(policy, numerical, categorical)
    preset = DataDriftPreset(columns=columns, drift_share=policy.drift_share, per_column_method=methods, per_column_threshold=thresholds)
    snapshot = Report([preset], tags=[source, *(tags or [])], metadata={"source": source}).run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
        timestamp=timestamp,
    )
    for metric in snapshot.dict()["metrics"]:
        if metric["config"].get("type", "").endswith("ValueDrift"):
            column, value, is_drifted = _column_drifted(metric)
            drift.columns.append(ColumnDrift(column, str(metric["config"].get("method", "")), float(metric["config"].get("threshold", 0)),
                                             round(value, 5), is_drifted))
    return snapshot, drift


def _history_starts(
    week_end: pd.Timestamp, params: FeatureParams, reference_cutoffs: pd.Series | None, data_start: Any
) -> list[pd.Timestamp | None]:
    """Per distinct reference cutoff (sorted), the first event time the current side sees (None: all events)."""
    lookback = params.lookback_days * DAY
    if reference_cutoffs is None or data_start is None:
        return [None]
    start = pd.Timestamp(data_start)
    start = (start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")).normalize()
    lows = []
    for cutoff in pd.Series(reference_cutoffs).value_counts().sort_index().index:
        history = min(cutoff - start, lookback)
        lows.append(None if history >= lookback else week_end - history)
    return lows


def current_user_features(
    events: pd.DataFrame, week_end: pd.Timestamp, params: FeatureParams, reference_cutoffs: pd.Series | None, data_start: Any
) -> pd.DataFrame:
    """User features at week_end, computed as the reference was: a reference cutoff closer to the data start than
    the look-back saw only the events since the start (fewer users, shorter windows). For each reference
    cutoff the current side uses the same history length, so a short-history reference does not make every
    feature look drifted (measured: 20 of 24 features "drifted" on an unchanged shop without this)."""
    parts = []
    for low in _history_starts(week_end, params, reference_cutoffs, data_start):
        seen = events if low is None else events[events["timestamp"] >= low]
        parts.append(build_user_features(seen, week_end, params))
    return pd.concat(parts)


def sampled_user_features(
    events: ParquetEvents, week_end: pd.Timestamp, params: FeatureParams, reference_cutoffs: pd.Series | None, data_start: Any,
    n: int, seed: int,
) -> tuple[pd.DataFrame, int]:
    """(`_sample(current_user_features(...)[feature columns], n, seed)` of the loaded events, its row count before
    sampling) from the Parquet file: each distinct history's features come from the DuckDB feature SQL over the file
    (build_user_features), once, and only its sampled rows are kept, so one part is in memory at a time. The parts'
    sizes (users with an event in the part's look-back) are counted first, in one DuckDB pass."""
    columns = feature_columns(params.windows_days)
    lookback_start = week_end - params.lookback_days * DAY
    sources = [events.start if low is None else max(events.start, low) for low in _history_starts(week_end, params, reference_cutoffs, data_start)]
    distinct = sorted(set(sources))
    path = Path(events.path).as_posix()
    counts = ", ".join(
        f"count(DISTINCT user_id::VARCHAR) FILTER (WHERE timestamp >= '{max(s, lookback_start).isoformat()}'::TIMESTAMPTZ)" for s in distinct
    )
    (sizes,) = connection().execute(
        f"SELECT {counts} FROM read_parquet('{path}') WHERE timestamp >= '{max(distinct[0], lookback_start).isoformat()}'::TIMESTAMPTZ "
        f"AND timestamp < '{week_end.isoformat()}'::TIMESTAMPTZ"
    ).fetchall()
    size_of = dict(zip(distinct, (int(v) for v in sizes)))
    offsets = np.cumsum([0] + [size_of[s] for s in sources])
    total = int(offsets[-1])
    positions = sample_positions(total, n, seed)
    taken: list[pd.DataFrame] = []
    order: list[np.ndarray] = []  # for each taken block, the draw order of its rows
    for source in distinct:
        part = build_user_features(events.relation(source), week_end, params)
        if len(part) != size_of[source]:
            raise RuntimeError(f"{events.path}: {len(part)} users with features from {source}, {size_of[source]} counted")
        part = part[columns].reset_index(drop=True)
        for k in (k for k, s in enumerate(sources) if s == source):
            if positions is None:
                taken.append(part)
                order.append(np.arange(offsets[k], offsets[k + 1]))
                continue
            draw = np.flatnonzero((positions >= offsets[k]) & (positions < offsets[k + 1]))
            taken.append(part.iloc[positions[draw] - offsets[k]])
            order.append(draw)
        del part
    if not taken:
        return pd.DataFrame(columns=columns, dtype="float64"), total
    frame = pd.concat(taken, ignore_index=True)
    return frame.iloc[np.argsort(np.concatenate(order), kind="stable")].reset_index(drop=True), total


# --- the events that arrived ------------------------------------------------------------------------------

def item_reference_prices(events: pd.DataFrame) -> pd.Series:
    """List price per item: the highest price it was seen at in the reference window (promotions are below it)."""
    priced = events.loc[events["price"].notna(), ["item_id", "price"]]
    return priced.groupby("item_id", observed=True)["price"].max()


def event_mix(events: pd.DataFrame, item_prices: pd.Series, tolerance: float) -> pd.DataFrame:
    """One row per event: its category, type and price move against the item's reference list price.

    The move is `up` (above list by more than `tolerance`), `list` (at or below it: promotions come and go every
    week and are not drift), `new item` (not seen in the reference window) or `no price`.
    """
    ref_price = events["item_id"].map(item_prices).astype("float64")
    ratio = events["price"].astype("float64") / ref_price
    move = np.select([events["price"].isna(), ref_price.isna(), ratio > 1 + tolerance], ["no price", "new item", "up"], default="list")
    return pd.DataFrame(
        {
            "event_category": events["category"].astype("string").fillna("missing").to_numpy(),
            "event_type": events["event_type"].astype("string").to_numpy(),
            "event_price_change": move,
        }
    )


def parquet_reference_prices(events: ParquetEvents, start: pd.Timestamp, end: pd.Timestamp) -> pd.Series:
    """item_reference_prices of the events of [start, end) in the file, one record batch at a time."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = []
    for batch in events.batches(start, end, ["item_id", "price"]):
        price = batch.column("price")
        priced = pa.Table.from_batches([batch]).filter(pc.and_(pc.is_valid(price), pc.invert(pc.is_nan(price))))
        parts.append(priced.group_by("item_id").aggregate([("price", "max")]))
    if not parts:
        return pd.Series(dtype="float64", name="price")
    best = pa.concat_tables(parts).group_by("item_id").aggregate([("price_max", "max")])
    return pd.Series(best.column("price_max_max").to_numpy(), index=pd.Index(best.column("item_id").to_pylist(), name="item_id"),
                     name="price", dtype="float64")


def sampled_event_mix(
    events: ParquetEvents, start: pd.Timestamp, end: pd.Timestamp, item_prices: pd.Series, tolerance: float, n: int, seed: int
) -> tuple[pd.DataFrame, int]:
    """(`_sample(event_mix(events of [start, end)), n, seed)`, the events' count): the rows to keep are drawn from
    the count, then only those are decoded (one record batch at a time) and mixed."""
    total = events.count(start, end)
    rows = events.rows(start, end, ["item_id", "event_type", "category", "price"], sample_positions(total, n, seed))
    return event_mix(rows, item_prices, tolerance), total


def _between(events: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    ts = events["timestamp"]
    return events[(ts >= start) & (ts < end)]


def load_events(path: str | Path, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Canonical events with start <= timestamp < end from a Parquet file (only those row groups are read)."""
    frame = pd.read_parquet(path, filters=[("timestamp", ">=", start), ("timestamp", "<", end)])
    return frame


def event_time_range(path: str | Path) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The earliest and latest event timestamps of a canonical Parquet file, from the row groups' statistics
    when present (no data read)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    col = meta.schema.to_arrow_schema().get_field_index("timestamp")
    stats = [meta.row_group(i).column(col).statistics for i in range(meta.num_row_groups)]
    if stats and all(s is not None and s.has_min_max for s in stats):
        low, high = min(s.min for s in stats), max(s.max for s in stats)
    else:
        bounds = pc.min_max(pq.read_table(path, columns=["timestamp"])["timestamp"]).as_py()
        low, high = bounds["min"], bounds["max"]
    return pd.Timestamp(low).tz_convert("UTC"), pd.Timestamp(high).tz_convert("UTC")


def first_event_time(path: str | Path) -> pd.Timestamp:
    """The earliest event timestamp of a canonical Parquet file."""
    return event_time_range(path)[0]


# --- what the service saw --------------------------------------------------------------------------------

def served_inputs(log_frame: pd.DataFrame, columns: list[str], model_space: bool = True) -> pd.DataFrame:
    """Model inputs (as raw feature values) and the output (`prediction`) of logged propensity predictions.

    Records are those of shopsight/prediction_log.py: `features` (a dict of the model's input, i.e. the
    log1p of the raw features, shopsight.features.model_input) and `output` ({"probability": ...}). With
    `model_space` the inputs are mapped back with expm1, so they compare with the raw reference features.
    Top-level feature columns and a `probability` column are accepted too (already raw).
    """
    frame = log_frame
    if "endpoint" in frame.columns:
        frame = frame[(frame["endpoint"].astype("string") == PROPENSITY_ENDPOINT).fillna(False).to_numpy()]
    flat = [f"features.{c}" for c in columns]
    if set(flat) <= set(frame.columns) and (columns or "output.probability" in frame.columns):
        # the columnar reader's flattened records (read_log): model inputs, mapped back like the dicts below
        out = (np.expm1 if model_space else (lambda x: x))(frame[flat].astype("float64")).set_axis(columns, axis=1)
        out[PREDICTION_COLUMN] = frame["output.probability"].astype("float64")
        return out
    if "features" in frame.columns and not set(columns) <= set(frame.columns):
        values = frame["features"].map(lambda v: (json.loads(v) if isinstance(v, str) else v) or {})
        feats = pd.DataFrame.from_records(values.tolist(), index=frame.index, columns=columns) if len(frame) else pd.DataFrame(columns=columns)
        missing = [c for c in columns if c not in set().union(*map(set, values.tolist()))] if len(frame) else []
        transform = np.expm1 if model_space else (lambda x: x)
    else:
        feats = frame
        missing = [c for c in columns if c not in feats.columns]
        transform = lambda x: x  # noqa: E731 - top-level columns hold raw values
    if missing:
        raise ValueError(f"prediction log: missing input feature(s) {missing[:5]}: the log is from another feature set (features.windows_days)")
    out = transform(feats[columns].astype("float64")).copy()
    if "probability" in frame.columns:
        out[PREDICTION_COLUMN] = frame["probability"].astype("float64")
    elif "output" in frame.columns:
        out[PREDICTION_COLUMN] = frame["output"].map(lambda v: (json.loads(v) if isinstance(v, str) else v)["probability"]).astype("float64")
    else:
        raise ValueError("prediction log: no output column (`output` with a probability, or `probability`)")
    return out


def matured_quality(
    log_frame: pd.DataFrame,
    events: pd.DataFrame,
    week_end: pd.Timestamp,
    horizon_days: int,
    baseline: float | None,
    user_column: str = "user_id",
) -> tuple[pd.DataFrame, QualityCheck]:
    """ROC-AUC of the predictions logged in the week whose horizon ended by week_end, against purchases in
    [prediction time, prediction time + horizon). Returns the scored rows (target, prediction) and the check."""
    from sklearn.metrics import roc_auc_score

    end = week_end - horizon_days * DAY
    start = end - 7 * DAY
    if "endpoint" in log_frame.columns:
        log_frame = log_frame[(log_frame["endpoint"].astype("string") == PROPENSITY_ENDPOINT).fillna(False).to_numpy()]
    # a prediction's horizon starts at its feature cutoff (as_of), else when it was answered
    when_all = pd.to_datetime(log_frame["timestamp"], utc=True)
    if "as_of" in log_frame.columns:
        when_all = pd.to_datetime(log_frame["as_of"], utc=True).fillna(when_all)
    in_window = ((when_all >= start) & (when_all < end)).to_numpy()
    rows, when = log_frame[in_window], when_all[in_window]
    window = (start.isoformat(), end.isoformat())
    if rows.empty:
        return pd.DataFrame(columns=["target", PREDICTION_COLUMN]), QualityCheck("roc_auc", None, baseline, 0, 0, window)
    pred = served_inputs(rows, [])[PREDICTION_COLUMN]
    buys = events.loc[events["event_type"].astype("string") == "purchase", ["user_id", "timestamp"]]
    joined = pd.DataFrame({"user_id": rows[user_column].astype("string").to_numpy(), "t": when.to_numpy(), "row": np.arange(len(rows))})
    merged = joined.merge(buys.assign(user_id=buys["user_id"].astype("string")), on="user_id", how="inner")
    hit = merged[(merged["timestamp"] >= merged["t"]) & (merged["timestamp"] < merged["t"] + horizon_days * DAY)]["row"].unique()
    target = np.zeros(len(rows), dtype="int64")
    target[hit] = 1
    scored = pd.DataFrame({"target": target, PREDICTION_COLUMN: pred.to_numpy()})
    value = float(roc_auc_score(target, scored[PREDICTION_COLUMN])) if 0 < target.sum() < len(target) else None
    return scored, QualityCheck("roc_auc", value, baseline, len(rows), int(target.sum()), window)


def quality_snapshot(scored: pd.DataFrame, timestamp: datetime | None, tags: list[str]):
    """An Evidently snapshot with the ROC-AUC of the matured predictions (for the dashboard)."""
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.metrics import RocAuc

    data = scored.assign(target=scored["target"].astype("int64"))
    definition = DataDefinition(
        numerical_columns=[PREDICTION_COLUMN],
        classification=[BinaryClassification(target="target", prediction_probas=PREDICTION_COLUMN, pos_label=1)],
    )
    return Report([RocAuc()], tags=["quality", *tags], metadata={"source": "quality"}).run(
        Dataset.from_pandas(data, data_definition=definition), None, timestamp=timestamp
    )


# --- the weekly report ------------------------------------------------------------------------------------

@dataclass
class WeeklyReport:
    week: str
    start: str
    end: str
    out_dir: str
    decision: Decision
    sources: list[SourceDrift]
    quality: QualityCheck | None
    reference: str
    html: dict[str, str] = field(default_factory=dict)
    recommend_quality: QualityCheck | None = None  # NDCG@k of matured /recommend answers (monitoring/recommend_quality.py)
    recommend_metrics: dict[str, float] | None = None
    json_path: str = ""
    snapshots: dict[str, Any] = field(default_factory=dict, repr=False)  # Evidently snapshots, for the workspace
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "week": self.week, "start": self.start, "end": self.end, "reference": self.reference,
            "decision": self.decision.to_dict(),
            "sources": {s.source: s.to_dict() for s in self.sources},
            "quality": self.quality.to_dict() if self.quality else None,
            "recommend_quality": ({**self.recommend_quality.to_dict(), "metrics": self.recommend_metrics}
                                  if self.recommend_quality else None),
            "html": self.html, "seconds": self.seconds,
            "sampling": "each side sampled uniformly (seeded) to max_rows rows where larger; see 'sampled' per source",
        }


def build_weekly_report(
    *,
    week_end: Any,
    reference: pd.DataFrame,
    events: pd.DataFrame | ParquetEvents,
    feature_params: FeatureParams,
    policy: DriftPolicyParams,
    out_root: Path,
    state: dict[str, Any] | None = None,
    prediction_log: pd.DataFrame | None = None,
    reference_predictions: pd.Series | np.ndarray | None = None,
    champion_score: float | None = None,
    data_start: pd.Timestamp | None = None,
    reference_name: str = "reference",
    sources: tuple[str, ...] = ("user_features", "event_mix", "served", "quality", "recommend_quality"),
    write_html: bool = True,
    seed: int = 0,
    next_item_types: tuple[str, ...] = ("view", "cart", "favorite", "purchase"),
    reference_rows: int | None = None,
    reference_cutoffs: Sequence[Any] | None = None,
) -> WeeklyReport:
    """Measure every source for the week ending at `week_end`, decide with the policy, write HTML + JSON.

    `reference`: the champion's training features (a `cutoff` column and the model's feature columns), or the rows
    `_sample(reference, policy.max_rows, seed)` keeps of them (read_reference does so while reading) with
    `reference_rows` (the whole reference's row count) and `reference_cutoffs` (its distinct cutoffs).
    `events`: canonical events covering the reference event window up to week_end, as a frame or as a
    ParquetEvents window of the file (same report, without the events in memory). `prediction_log`: the
    week's (and the matured week's) logged predictions; `reference_predictions`: the champion's outputs on
    the reference, for prediction drift. `next_item_types`: the events whose item counts as a user's next item
    for the NDCG of logged /recommend answers (params.yaml recommender.event_types). Nothing is triggered here:
    flows/monitoring.py acts on the decision.
    """
    import time

    start, end = week_window(week_end)
    week = week_label(week_end)
    out_dir = Path(out_root) / week
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = end.to_pydatetime()
    tags = [week]
    columns = feature_columns(feature_params.windows_days)
    if reference_cutoffs is not None:
        cutoffs = pd.Series(pd.to_datetime(list(reference_cutoffs), utc=True))
    else:
        cutoffs = pd.to_datetime(reference["cutoff"], utc=True) if "cutoff" in reference.columns else None
    ref_rows = len(reference) if reference_rows is None else int(reference_rows)
    ref_sampled = ref_rows > policy.max_rows
    on_disk = isinstance(events, ParquetEvents)
    ref_end = cutoffs.max() if cutoffs is not None else start
    # the current side mirrors the reference's look-back truncation (current_user_features), so no window is
    # excluded for it; features are excluded only by the policy
    counted, excluded = counted_features(policy, columns)
    report = WeeklyReport(week, start.isoformat(), end.isoformat(), str(out_dir), Decision(False, [], [], end.isoformat()), [], None, reference_name)

    def _keep(name: str, snapshot, drift: SourceDrift | None) -> None:
        if drift is not None:
            report.sources.append(drift)
        if snapshot is not None:
            report.snapshots[name] = snapshot
            if write_html:
                path = out_dir / f"{name}.html"
                snapshot.save_html(str(path))
                report.html[name] = str(path)

    if "user_features" in sources:
        t0 = time.perf_counter()
        if on_disk:
            current, current_rows = sampled_user_features(events, end, feature_params, cutoffs, data_start, policy.max_rows, seed)
        else:
            current = current_user_features(events, end, feature_params, cutoffs, data_start)
            current_rows = len(current)
        snapshot, drift = run_drift("user_features", reference, current, columns, [], policy, counted, excluded=excluded,
                                    timestamp=stamp, tags=tags, seed=seed)
        drift.sampled = drift.sampled or ref_sampled or current_rows > policy.max_rows
        _keep("user_features", snapshot, drift)
        report.seconds["user_features"] = round(time.perf_counter() - t0, 3)
    if "event_mix" in sources:
        t0 = time.perf_counter()
        ref_start = ref_end - policy.reference_event_days * DAY
        tolerance = policy.price_change_tolerance
        if on_disk:
            prices = parquet_reference_prices(events, ref_start, ref_end)
            ref_mix, ref_mix_rows = sampled_event_mix(events, ref_start, ref_end, prices, tolerance, policy.max_rows, seed)
            cur_mix, cur_mix_rows = sampled_event_mix(events, start, end, prices, tolerance, policy.max_rows, seed)
        else:
            ref_events = _between(events, ref_start, ref_end)
            prices = item_reference_prices(ref_events)
            ref_mix = event_mix(ref_events, prices, tolerance)
            cur_mix = event_mix(_between(events, start, end), prices, tolerance)
            ref_mix_rows, cur_mix_rows = len(ref_mix), len(cur_mix)
        critical = [c for c in policy.critical if c in EVENT_COLUMNS]
        snapshot, drift = run_drift("event_mix", ref_mix, cur_mix, [], EVENT_COLUMNS, policy, [], critical=critical,
                                    timestamp=stamp, tags=tags, seed=seed)
        drift.sampled = drift.sampled or max(ref_mix_rows, cur_mix_rows) > policy.max_rows
        _keep("event_mix", snapshot, drift)
        report.seconds["event_mix"] = round(time.perf_counter() - t0, 3)
    if "served" in sources and prediction_log is not None and len(prediction_log):
        t0 = time.perf_counter()
        ts = pd.to_datetime(prediction_log["timestamp"], utc=True)
        week_log = prediction_log[((ts >= start) & (ts < end)).to_numpy()]
        served_rows = len(week_log)
        # sample before decoding: run_drift would sample to max_rows anyway (same uniform, seeded draw)
        served = served_inputs(_sample(week_log, policy.max_rows, seed), columns)
        ref = reference[columns].copy()
        numerical = list(columns)
        # the service computed features with the full look-back: windows longer than the reference's history
        # (truncated at the data start there) do not count for this source
        history = (cutoffs.min() - pd.Timestamp(data_start).normalize()) / DAY if cutoffs is not None and data_start is not None else None
        served_counted, served_excluded = counted_features(policy, columns, history)
        if reference_predictions is not None:
            ref[PREDICTION_COLUMN] = np.asarray(reference_predictions, dtype="float64")
            numerical.append(PREDICTION_COLUMN)
            served_counted.append(PREDICTION_COLUMN)
        snapshot, drift = run_drift("served", ref, served, numerical, [], policy, served_counted, excluded=served_excluded,
                                    timestamp=stamp, tags=tags, seed=seed)
        drift.sampled = drift.sampled or ref_sampled or served_rows > len(served)
        drift.current_rows = served_rows if served_rows > len(served) else drift.current_rows
        _keep("served", snapshot, drift)
        report.seconds["served"] = round(time.perf_counter() - t0, 3)
    matured = events
    if on_disk and prediction_log is not None and len(prediction_log) and {"quality", "recommend_quality"} & set(sources):
        # the matured predictions of [end - horizon - 7 days, end - horizon) and their outcomes up to end: only the
        # logged users' events are joined to them
        users = prediction_log["user_id"].dropna().astype("string").unique() if "user_id" in prediction_log.columns else []
        matured = events.frame(end - (feature_params.horizon_days + 7) * DAY, end, ["user_id", "item_id", "event_type", "timestamp"],
                               users=list(users))
    if "quality" in sources and prediction_log is not None and len(prediction_log):
        t0 = time.perf_counter()
        scored, quality = matured_quality(prediction_log, matured, end, feature_params.horizon_days, champion_score)
        report.quality = quality
        if quality.value is not None:
            _keep("quality", quality_snapshot(scored, stamp, tags), None)
        report.seconds["quality"] = round(time.perf_counter() - t0, 3)
    if "recommend_quality" in sources and prediction_log is not None and len(prediction_log):
        from monitoring.recommend_quality import matured_recommendations, recommend_quality_snapshot

        t0 = time.perf_counter()
        scored, check, metrics = matured_recommendations(prediction_log, matured, end, feature_params.horizon_days,
                                                         policy.ranking_k, next_item_types)
        report.recommend_quality, report.recommend_metrics = check, metrics
        if check.value is not None:
            _keep("recommend_quality", recommend_quality_snapshot(scored, policy.ranking_k, stamp, tags), None)
        report.seconds["recommend_quality"] = round(time.perf_counter() - t0, 3)

    report.decision = decide(policy, report.sources, report.quality, state or {}, end.to_pydatetime())
    (log.warning if report.decision.retrain else log.info)("%s: %s -> %s", week, report.decision.reason,
                                                           "retrain" if report.decision.retrain else "no action")
    path = out_dir / "weekly_report.json"
    path.write_text(json.dumps(report.to_dict(), indent=2, default=float))
    report.json_path = str(path)
    return report


# --- the project's inputs ---------------------------------------------------------------------------------

def champion_reference_source(task: str = "propensity", features_path: Path | None = None) -> tuple[Path, str | None, str, str | None]:
    """(reference Parquet, the split to keep of it or None, where it came from, champion tag): the reference Parquet
    stored with the champion, else the train split of the pipeline's feature table (before any model is registered)."""
    from shopsight import paths
    from shopsight.registry import RegistryError, champion_tag, reference_path

    tag = None
    try:
        tag = champion_tag(task)
        path = reference_path(task)
        return Path(path), None, f"champion {tag} ({Path(path).name})", tag
    except RegistryError as exc:
        features_path = features_path or paths.PROPENSITY_FEATURES
        if not Path(features_path).exists():
            raise FileNotFoundError(f"no reference: {exc}, and {features_path} does not exist; run `dvc repro` first") from exc
        log.info("no champion reference (%s): using the train split of %s", exc, features_path)
        return Path(features_path), "train", f"train split of {features_path}", tag


def champion_reference(task: str = "propensity", features_path: Path | None = None) -> tuple[pd.DataFrame, str, str | None]:
    """(reference features, where they came from, champion tag), the whole reference in memory (see
    champion_reference_source; the weekly report reads only its sample with read_reference)."""
    path, split, name, tag = champion_reference_source(task, features_path)
    data = pd.read_parquet(path)
    return (data if split is None else data[data["split"] == split].reset_index(drop=True)), name, tag


def read_reference(path: str | Path, columns: list[str], n: int, seed: int, split: str | None = None) -> tuple[pd.DataFrame, int, list | None]:
    """(`_sample(reference[["cutoff", *columns]], n, seed)`, the reference's row count, its distinct cutoffs or None)
    of a reference features Parquet (`split`: its rows of that split only, in file order): the cutoff and split
    columns are read whole, the feature columns of the sampled rows only, one record batch at a time."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    file = pq.ParquetFile(path)
    names = file.schema_arrow.names
    missing = [c for c in columns + (["split"] if split is not None else []) if c not in names]
    if missing:
        raise ValueError(f"reference {path}: missing column(s) {missing[:5]}: it was built for another feature set "
                         "(features.windows_days); rebuild it with `dvc repro` or retrain the champion")
    keys = [c for c in ("cutoff", "split") if c in names and (c == "cutoff" or split is not None)]
    head = file.read(columns=keys) if keys else None
    keep = pc.equal(head.column("split"), split) if split is not None else None
    n_rows = file.metadata.num_rows if keep is None else int(pc.sum(keep).as_py() or 0)
    cutoffs = None
    if "cutoff" in names:
        cut = head.column("cutoff") if keep is None else head.column("cutoff").filter(keep)
        cutoffs = sorted(pd.to_datetime(cut.unique().to_pandas(), utc=True))
    read = [c for c in ["cutoff", *columns] if c in names]

    def batches():
        for batch in file.iter_batches(columns=list(dict.fromkeys(read + (["split"] if split is not None else [])))):
            if split is not None:
                batch = batch.filter(pc.equal(batch.column("split"), split))
            yield batch.select(read)

    sample = _take_rows(batches(), sample_positions(n_rows, n, seed), read, f"reference {path}")
    return sample, n_rows, cutoffs


def champion_score(tag: str | None) -> float | None:
    """The champion's test score on its main metric (the quality baseline), when it is ROC-AUC. The gate score is a
    validation score (the split the champion was chosen on); the test score is the honest estimate."""
    from shopsight.registry import list_models

    for row in list_models():
        if row["tag"] == tag and row.get("main_metric", "roc_auc") == "roc_auc":
            value = row.get("test_score", row.get("score") if row.get("gate_split", "test") == "test" else None)
            return float(value) if value is not None else None
    return None


def champion_predictions(tag: str, reference: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """The champion's propensity (its own score, as the service logs it) on its reference features: the baseline
    of prediction drift, whatever the champion's family."""
    import bentoml

    from shopsight.features import model_input
    from shopsight.tasks.user_binary import ChampionScorer

    scorer = ChampionScorer(Path(bentoml.models.get(tag).path))
    return scorer.raw(model_input(reference, scorer.columns))


def read_log(log_dir: Path | None, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame | None:
    """Prediction-log records with start <= timestamp < end, or None when there are none.

    Columnar fast path: each hourly file in the window is parsed by pyarrow's JSON reader (multi-threaded,
    features flattened to `features.<name>` columns: about 10x faster than dict records at a million rows);
    a file it cannot parse (a torn last line after a crash) is read with shopsight.prediction_log's reader.
    """
    import pyarrow as pa
    import pyarrow.json as pj

    from shopsight.prediction_log import FILE_PATTERN, _hour_of, read_prediction_log

    if log_dir is None or not Path(log_dir).exists():
        return None
    frames = []
    for path in sorted(Path(log_dir).glob("predictions-*.jsonl")):
        hour = _hour_of(path) if FILE_PATTERN.match(path.name) else None
        if hour is not None and (hour >= end or hour + pd.Timedelta(hours=1) <= start):
            continue
        try:
            table = pj.read_json(path)
        except (pa.ArrowInvalid, OSError):
            frames.append(_flatten(read_prediction_log(path.parent, hour, hour + pd.Timedelta(hours=1)) if hour is not None
                                   else read_prediction_log(path.parent, start, end)))
            continue
        frames.append(table.flatten().to_pandas())
    if not frames:
        return None
    frame = pd.concat(frames, ignore_index=True)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    if "as_of" in frame.columns:
        frame["as_of"] = pd.to_datetime(frame["as_of"], utc=True, format="ISO8601")
    frame = frame[(frame["timestamp"] >= start) & (frame["timestamp"] < end)].reset_index(drop=True)
    return frame if len(frame) else None


def _flatten(frame: pd.DataFrame) -> pd.DataFrame:
    """Records with dict `features` / `output` as flat `features.<name>` / `output.<key>` columns."""
    parts = [frame.drop(columns=[c for c in ("features", "output") if c in frame.columns])]
    for col in ("features", "output"):
        if col in frame.columns:
            parts.append(pd.DataFrame.from_records(frame[col].map(lambda v: v or {}).tolist(), index=frame.index).add_prefix(f"{col}."))
    return pd.concat(parts, axis=1)


def run_weekly_monitoring(
    params,
    project_dir: Path,
    week_end: Any = None,
    log_dir: Path | None = None,
    out_root: Path | None = None,
    state: dict[str, Any] | None = None,
    score_reference: bool = True,
    reference_path: Path | None = None,
    seed: int = 0,
) -> WeeklyReport:
    """The weekly report of a project: champion reference, events from data/events.parquet, the prediction
    log; for the week ending at `week_end` (default: `default_week_end`, the last completed ISO week that the
    events cover). `reference_path`: a reference features Parquet to use instead of the champion's."""
    from shopsight import paths

    project_dir = Path(project_dir)
    fp, policy = params.features, params.monitoring.policy
    week_end = default_week_end(project_dir / paths.EVENTS) if week_end is None else week_end
    start, end = week_window(week_end)
    if reference_path is not None:
        ref_file, split, name, tag = Path(reference_path), None, str(reference_path), None
    else:
        ref_file, split, name, tag = champion_reference_source(features_path=project_dir / paths.PROPENSITY_FEATURES)
    columns = feature_columns(fp.windows_days)
    # only the rows the drift report samples (the same draw as on the whole reference) are read
    reference, ref_rows, ref_cutoffs = read_reference(ref_file, columns, policy.max_rows, seed, split)
    events_path = project_dir / paths.EVENTS
    data_start = first_event_time(events_path)
    ref_end = max(ref_cutoffs) if ref_cutoffs else start
    first = min(ref_end - policy.reference_event_days * DAY, end - fp.lookback_days * DAY, start - (fp.horizon_days + 7) * DAY)
    # the window the report reads, left on disk: features in DuckDB over the file, the event mix in record batches
    events = ParquetEvents(events_path, first, end)
    prediction_log = read_log(log_dir, start - (fp.horizon_days + 7) * DAY, end)
    ref_pred = None
    if prediction_log is not None and tag is not None and score_reference:
        ref_pred = champion_predictions(tag, reference, columns)
    return build_weekly_report(
        week_end=end, reference=reference, events=events, feature_params=fp, policy=policy,
        out_root=out_root or project_dir / paths.REPORTS_DIR, state=state, prediction_log=prediction_log,
        reference_predictions=ref_pred, champion_score=champion_score(tag), data_start=data_start, reference_name=name,
        next_item_types=tuple(params.recommender.event_types), reference_rows=ref_rows, reference_cutoffs=ref_cutoffs, seed=seed,
    )
