"""Ingest: convert a source into canonical events, reject what breaks the contract, report what happened."""

from __future__ import annotations

import bisect
import gc
import json
import math
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shopsight import paths
from shopsight.config import Params
from shopsight.schema import CANONICAL_ARROW, CANONICAL_COLUMNS, EVENT_TYPES
from shopsight.sources.canonical import RawChunk
from shopsight.sources.reading import TEXT
from shopsight.validation import split_plain_rows, validate_events

# The rejects file: every column of the source chunk as text, plus why and where from.
REJECT_COLUMNS: tuple[str, ...] = (
    "user_id", "item_id", "event_type", "timestamp", "session_id", "category", "price", "quantity", "raw_line", "reason", "source",
)
REJECTS_ARROW = pa.schema([(name, pa.string()) for name in REJECT_COLUMNS])
TOP_REASONS = 3  # how many reject reasons a failed ingest names
# DuckDB's memory for the dedup/sessionise/sort pass (it spills to data/staging beyond), unless ingest.memory_gb
# says: a quarter of the machine, within these bounds. Fixed whatever the file's size, but not too small: under a
# 1 GB limit DuckDB 2.0's DISTINCT + ORDER BY of 102M staged events failed ("failed to pin block") after 97 s.
FINALISE_MEMORY_GB = (1.0, 8.0)
# DuckDB's memory per staged row in the DISTINCT + ORDER BY (measured: 5.7 GiB peak for 30.6M simulator events in one
# pass under 6 GB): more rows than its memory holds are finalised one time range at a time (_finalise_by_time), where
# sessions need not be derived. Written out per range first, two ranges at 30M took 20% longer than the one pass
# that fitted; read straight from a staging file in time order (below), three took 0.6x its time.
FINALISE_BYTES_PER_ROW = 200
FINALISE_BATCH_ROWS = 1 << 20
FINALISE_MAX_PASSES = 64
# Where the staged rows come in time order (most exports do: the file's row groups then each span a short time), the
# ranges are read straight from the staging file (DuckDB skips the row groups outside each range by their statistics)
# and kept to about this many rows: DuckDB's DISTINCT + ORDER BY costs more per row on bigger inputs (30M simulator
# events: one pass 30.5-35.4 s and 6.0 GB, three ranges of 10M 25.0 s and 2.0 GB, six 26.2 s and 1.1 GB).
FINALISE_RANGE_ROWS = 10_000_000
# The most the range queries may read the staged rows over (row groups overlapping several ranges are read by each):
# beyond, the rows are first written out per range (one more pass over them, but each range reads only its own).
FINALISE_MAX_READS = 2.0
STAGING_ROW_GROUP = 1 << 16  # rows per row group of the staging file: its time statistics are what the ranges skip by
# The events file's order: time, user, then the rest of the row, events of one instant in funnel order (a view before
# the cart of the same second). A total order: ties come out the same in every run, and exact duplicates end up next
# to each other, so they are dropped in one streaming pass over the sorted rows (_without_repeats) instead of
# DuckDB's DISTINCT, a hash aggregate before the sort (10M simulator events: 6.5 s sorted and written against 8.2 s).
EVENT_ORDER_SQL = "list_position([" + ", ".join(f"'{name}'" for name in EVENT_TYPES) + "], event_type)"
EVENTS_ORDER_SQL = f"timestamp, user_id, item_id, {EVENT_ORDER_SQL}, session_id, category, price, quantity"


class IngestError(ValueError):
    """The source converted, but nothing (or nothing valid) came out of it: the message names the top
    reject reasons and the rejects file."""


@dataclass
class IngestReport:
    source: str
    rows_in: int = 0
    rows_out: int = 0
    rejected: int = 0
    duplicates_removed: int = 0
    drop_duplicates: bool = True
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    users: int = 0
    items: int = 0
    start: str | None = None
    end: str | None = None
    sessions_derived: bool = False


def iter_source_chunks(params: Params) -> tuple[str, Iterator[pd.DataFrame | RawChunk]]:
    """Yield raw chunks (canonical column names, unvalidated, or RawChunks where the source gives them) from the configured source."""
    data = params.data
    if data.source == "synthetic":
        from shopsight.simulator import generate_shop

        result = generate_shop(simulator_params_for_pipeline(params), paths.SYNTHETIC_DIR)
        events_path = Path(result.events_path)
        return str(events_path), _iter_parquet(events_path, data.chunksize, delete_after=True)
    from shopsight.sources import read_source

    return str(data.path), read_source(data.source, data.path, chunksize=data.chunksize, options=data.options, raw=True)


def simulator_params_for_pipeline(params: Params):
    """Simulator params whose ground truth lines up with the pipeline: truth at every planned cutoff,
    over the features' horizon (so evaluation can put the oracle next to the models)."""
    from shopsight.features import plan_cutoffs

    sim = params.data.synthetic
    # the last instant simulated, as the pipeline plans from the last event (plan_cutoffs floors it to a whole day)
    end = pd.Timestamp(sim.start_date, tz="UTC") + pd.Timedelta(days=sim.days) - pd.Timedelta(1, "ns")
    update: dict = {"horizon_days": params.features.horizon_days, "churn_horizon_days": params.churn.horizon_days}
    if sim.truth_cutoffs is None:
        # churn plans its cutoffs with its own horizon (shopsight.churn.churn_cutoffs): truth at those too
        churn_plan = plan_cutoffs(end, params.features.model_copy(update={"horizon_days": params.churn.horizon_days}))
        cutoffs = sorted({c for plan in (plan_cutoffs(end, params.features), churn_plan) for cs in plan.values() for c in cs})
        update["truth_cutoffs"] = [c.strftime("%Y-%m-%d") for c in cutoffs if c > pd.Timestamp(sim.start_date, tz="UTC")]
    return sim.model_copy(update=update)


def _iter_parquet(path: Path, chunksize: int, delete_after: bool = False) -> Iterator[RawChunk]:
    """The simulator's canonical Parquet file as RawChunks (text as Arrow-backed strings): its plain rows are checked
    in Arrow kernels, any other goes to validate_events as it is."""
    offset = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=chunksize):
        frame = batch.to_pandas(types_mapper=lambda t: TEXT if t in (pa.string(), pa.large_string()) else None)
        frame["raw_line"] = range(offset + 1, offset + len(frame) + 1)
        offset += len(frame)
        columns = {name: name if name in frame.columns else None for name in CANONICAL_COLUMNS}
        yield RawChunk(raw=frame, columns=columns, event_map={name: name for name in EVENT_TYPES}, event_constant=None, convert=_as_is)
    if delete_after:
        path.unlink()  # the canonical copy is data/events.parquet; the simulator's raw copy is not kept twice


def _as_is(frame: pd.DataFrame) -> pd.DataFrame:
    return frame


def _publish_truth(params: Params) -> None:
    """data/truth/: the simulator's ground truth (or a note that a file source has none)."""
    if paths.TRUTH_DIR.exists():
        shutil.rmtree(paths.TRUTH_DIR)
    paths.TRUTH_DIR.mkdir(parents=True)
    if params.data.source == "synthetic":
        for item in paths.SYNTHETIC_DIR.iterdir():
            shutil.move(str(item), paths.TRUTH_DIR / item.name)
        shutil.rmtree(paths.SYNTHETIC_DIR, ignore_errors=True)
    else:
        (paths.TRUTH_DIR / "NO_GROUND_TRUTH.json").write_text(json.dumps({"source": params.data.source, "ground_truth": False}))


def _write_tables(tables: list[tuple[pq.ParquetWriter, pa.Table]]) -> None:
    for writer, table in tables:
        writer.write_table(table, row_group_size=STAGING_ROW_GROUP)


def _read_ahead(chunks: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """The chunks, the next one read (parsed, mapped to the contract's columns) in a thread while the caller works
    on this one: Arrow's CSV parsing and pyarrow compute release the GIL, so the two overlap on a second core.
    An error of the reader is raised here, at the chunk it happened in."""
    done = object()
    it = iter(chunks)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-read") as pool:
        future = pool.submit(next, it, done)
        while True:
            item = future.result()
            if item is done:
                return
            future = pool.submit(next, it, done)
            yield item
            del item


def ingest(params: Params) -> IngestReport:
    """Run ingest end to end: events.parquet, rejects.parquet and the ingest report JSON.

    Every row read is accounted for: rows_in = rows_out + rejected + duplicates_removed. Rejects are
    written as they are found (memory does not grow with their number). Memory is bounded: four chunks
    (data.chunksize rows) at a time (one read and one written on a second core while one is checked, and the
    valid rows of the latest, staged when the next comes or else handed to DuckDB from memory), then
    DuckDB's pass under finalise_memory_gb() (spilling beyond). A source that yields no valid event (all
    rejected, or a header and no data) raises IngestError naming the top reasons and the rejects file, and leaves
    the previous events in place.
    """
    # Arrow's default allocator (mimalloc) returns and re-faults pages chunk after chunk: measured here, ~1 s of system
    # time per million rows that the C library's allocator does not spend (same peak memory). Restored when done.
    pool = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        return _ingest(params)
    finally:
        pa.set_memory_pool(pool)


def _ingest(params: Params) -> IngestReport:
    source, chunks = iter_source_chunks(params)
    chunks = _read_ahead(chunks)
    report = IngestReport(source=source, drop_duplicates=params.ingest.drop_duplicates)
    reasons: Counter[str] = Counter()
    staged = 0
    staged_without_session = 0  # rows whose session the ingest derives (none: the sessionising window is skipped)
    paths.STAGING_EVENTS.parent.mkdir(parents=True, exist_ok=True)
    paths.REJECTS.parent.mkdir(parents=True, exist_ok=True)
    tmp_rejects = paths.REJECTS.with_suffix(".parquet.tmp")
    valid_writer = pq.ParquetWriter(paths.STAGING_EVENTS, CANONICAL_ARROW)
    reject_writer = pq.ParquetWriter(tmp_rejects, REJECTS_ARROW)
    held: pa.Table | None = None
    try:
        # the previous chunk's Parquet writes (which release the GIL) overlap this chunk's checks
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-write") as writes:
            written = None
            for chunk in chunks:
                checked = check_chunk(chunk, source=source, params=params)
                report.rows_in += checked.rows_in
                # a chunk's valid rows are staged when the next chunk comes: the last chunk's go to DuckDB from memory
                tables = [] if held is None else [(valid_writer, held)]
                held = checked.valid
                if checked.valid is not None:
                    staged += checked.valid.num_rows
                    staged_without_session += checked.without_session
                if checked.rejects is not None:
                    tables.append((reject_writer, checked.rejects))
                    report.rejected += checked.rejects.num_rows
                    reasons.update(checked.reasons)
                if written is not None:
                    written.result()
                written = writes.submit(_write_tables, tables)
                # Free this chunk's frames: pandas frames sit in reference cycles that the cyclic collector reaches too
                # rarely on its own (measured: +80 MB per million rows without this). In flight at most: one chunk's
                # tables being written, one chunk's valid rows held, one chunk being checked, one being read.
                del chunk, checked, tables
                gc.collect()
            if written is not None:
                written.result()
    except BaseException:
        paths.STAGING_EVENTS.unlink(missing_ok=True)
        tmp_rejects.unlink(missing_ok=True)
        raise
    finally:
        valid_writer.close()
        reject_writer.close()
    os.replace(tmp_rejects, paths.REJECTS)
    report.rejects_by_reason = dict(reasons.most_common())
    if staged == 0:
        paths.STAGING_EVENTS.unlink(missing_ok=True)
        raise IngestError(_nothing_valid_message(params, report))
    pa.default_memory_pool().release_unused()  # the reader's buffers go back before DuckDB takes its share
    _finalise(params, report, staged=staged, staged_without_session=staged_without_session, tail=held)
    del held
    _publish_truth(params)
    paths.INGEST_REPORT.parent.mkdir(parents=True, exist_ok=True)
    paths.INGEST_REPORT.write_text(json.dumps(asdict(report), indent=2))
    return report


@dataclass
class CheckedChunk:
    """One chunk checked against the contract: its valid rows (canonical Arrow), its rejects (REJECTS_ARROW), counts."""

    rows_in: int
    valid: pa.Table | None
    rejects: pa.Table | None
    reasons: Counter  # reject reason -> rows (a row with several reasons counts under each)

    @property
    def without_session(self) -> int:
        """Valid rows with no session id (the finalising pass derives theirs)."""
        if self.valid is None:
            return 0
        sessions = self.valid.column("session_id")
        return sessions.null_count + int(pc.sum(pc.equal(sessions, "")).as_py() or 0)


def check_chunk(chunk: pd.DataFrame | RawChunk, *, source: str, params: Params) -> CheckedChunk:
    """Check one chunk of a source against the contract (shared by ingest and the Dask shards).

    A RawChunk's plain rows are checked and converted in Arrow kernels (validation.split_plain_rows); the rest, or a
    canonical chunk, go through the adapter's conversion and validate_events, which gives every failing row its reasons."""
    bounds = {"min_timestamp": params.ingest.min_timestamp, "max_timestamp": params.ingest.max_timestamp}
    tables: list[pa.Table] = []
    rest: pd.DataFrame | None = chunk
    if isinstance(chunk, RawChunk):
        plain, is_plain = split_plain_rows(chunk, **bounds)
        if plain.num_rows:
            tables.append(plain)
        rest = None if is_plain.all() else chunk.canonical(~is_plain)
    rejects, reasons = None, Counter()
    if rest is not None:
        valid, rejected = validate_events(rest, source=source, **bounds)
        if len(valid):
            tables.append(pa.Table.from_pandas(valid, preserve_index=False).cast(CANONICAL_ARROW))  # the categorical decodes in the cast
        if len(rejected):
            rejects = _rejects_table(rejected)
            for reason, count in rejected["reason"].value_counts().items():
                for part in str(reason).split("; "):
                    reasons[part] += int(count)
    valid_table = None if not tables else tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    return CheckedChunk(rows_in=len(chunk), valid=valid_table, rejects=rejects, reasons=reasons)


def _rejects_table(rejects: pd.DataFrame) -> pa.Table:
    """One chunk's rejects in the fixed rejects schema (a column the source lacks is null).

    Built from the columns' Arrow arrays: going through pandas' from_pandas would copy every
    string through Python objects (~0.7 GB at peak for a million rejects)."""
    arrays = []
    for name in REJECT_COLUMNS:
        if name in rejects.columns:
            column = rejects[name]
            values = column.array.__arrow_array__() if hasattr(column.array, "__arrow_array__") else pa.array(column.astype(object), from_pandas=True)
            arrays.append(values.cast(pa.string()))
        else:
            arrays.append(pa.nulls(len(rejects), pa.string()))
    return pa.Table.from_arrays(arrays, schema=REJECTS_ARROW)


def _nothing_valid_message(params: Params, report: IngestReport) -> str:
    where = params.data.path if params.data.source != "synthetic" else "the simulator"
    if report.rows_in == 0:
        return (
            f"{report.source}: no data rows (the file is empty after its header). Nothing was ingested; the previous "
            f"data/events.parquet is kept. Fix: point data.path in params.yaml at the full export (now {where})."
        )
    top = "; ".join(f"{reason} ({count})" for reason, count in list(report.rejects_by_reason.items())[:TOP_REASONS])
    return (
        f"{report.source}: all {report.rows_in} rows were rejected, no valid event. Top reasons: {top}. "
        f"Every rejected row, with its line and reason, is in {paths.REJECTS}. The previous data/events.parquet is kept. "
        f"Fix: check data.source and data.options (column mapping, timestamp_format, encoding) in params.yaml, or the file."
    )


def finalise_memory_gb(params: Params) -> float:
    """DuckDB's memory for the finalising pass: ingest.memory_gb, else a quarter of physical memory within FINALISE_MEMORY_GB."""
    if params.ingest.memory_gb is not None:
        return float(params.ingest.memory_gb)
    low, high = FINALISE_MEMORY_GB
    return min(max(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 / 4, low), high)


def _finalise(params: Params, report: IngestReport, *, staged: int, staged_without_session: int, tail: pa.Table | None = None) -> None:
    """Deduplicate, sessionise where the source has no sessions, pseudonymise, sort: out-of-core in DuckDB.

    `staged` valid rows: those written to the staging file and `tail` (the last chunk's, read from memory: not
    written and read again), `staged_without_session` of them with no session id (when none lacks one, the
    sessionising window functions, a sort per user, are not run)."""
    gap = int(params.ingest.session_gap_minutes)
    salt_env = params.ingest.pseudonymise_salt_env
    salt = os.environ.get(salt_env, "") if salt_env else ""
    if salt_env and not salt:
        raise ValueError(f"params.yaml ingest.pseudonymise_salt_env={salt_env!r} but ${salt_env} is empty: export a salt")
    user_expr = "sha256(? || user_id)[:16]" if salt else "user_id"
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    # Bounded memory whatever the file's size: the dedup and the sort spill to disk beyond this.
    spill = paths.STAGING_EVENTS.parent / "duckdb_spill"
    memory_gb = finalise_memory_gb(params)
    con.execute(f"SET memory_limit='{memory_gb:.2f}GB'")
    con.execute(f"SET temp_directory='{spill}'")
    staged_rows = f"read_parquet('{paths.STAGING_EVENTS}')"
    if tail is not None:
        con.register("tail", tail)
        staged_rows = f"(SELECT * FROM {staged_rows} UNION ALL SELECT * FROM tail)"
    tmp_events = paths.EVENTS.with_suffix(".parquet.tmp")
    distinct = "DISTINCT" if params.ingest.drop_duplicates else ""  # exact duplicate rows, counted in the report
    passes = min(math.ceil(staged * FINALISE_BYTES_PER_ROW / (memory_gb * 2**30)), FINALISE_MAX_PASSES)
    plan = _range_plan(con, staged_rows, tail, staged=staged, memory_passes=passes) if staged_without_session == 0 else None
    if plan is not None:
        query = None  # sorted and deduplicated one time range at a time (below): each one's sort fits in memory
    else:
        query = f"""
        COPY (
          WITH d AS (SELECT {distinct} * FROM {staged_rows}),
          g AS (
            SELECT *, CASE WHEN lag(timestamp) OVER w IS NULL
                            OR lag(timestamp) OVER w < timestamp - INTERVAL {gap} MINUTE THEN 1 ELSE 0 END AS new_session
            FROM d WINDOW w AS (PARTITION BY user_id ORDER BY timestamp)
          ),
          s AS (SELECT *, sum(new_session) OVER (PARTITION BY user_id ORDER BY timestamp ROWS UNBOUNDED PRECEDING) AS sess_no FROM g)
          SELECT {user_expr} AS user_id, item_id, event_type, timestamp,
                 coalesce(NULLIF(session_id, ''), user_id || '-s' || CAST(sess_no AS VARCHAR)) AS session_id,
                 category, price, quantity
          FROM s ORDER BY {EVENTS_ORDER_SQL}
        ) TO '{tmp_events}' (FORMAT PARQUET)
    """
    try:
        if query is None:
            _finalise_by_time(con, staged_rows, tmp_events, bounds=plan[0], pushdown=plan[1], dedup=params.ingest.drop_duplicates,
                              user_expr=user_expr, salt=salt)
        else:
            con.execute(query, [salt] if salt else [])
    except duckdb.OutOfMemoryException as exc:
        con.close()
        for leftover in (tmp_events, paths.STAGING_EVENTS):
            leftover.unlink(missing_ok=True)
        shutil.rmtree(spill, ignore_errors=True)
        shutil.rmtree(_time_ranges_dir(), ignore_errors=True)
        raise IngestError(
            f"{report.source}: DuckDB ran out of its {memory_gb:.2f} GB while deduplicating and sorting {staged:,} valid rows "
            f"({str(exc).splitlines()[0]}). Nothing was replaced: the previous {paths.EVENTS} is kept. Fix: raise "
            "ingest.memory_gb in params.yaml (or free memory) and run the ingest again."
        ) from exc
    os.replace(tmp_events, paths.EVENTS)  # a failed run never leaves a half-written events file
    stats = con.execute(
        f"SELECT count(*), count(DISTINCT user_id), count(DISTINCT item_id), min(timestamp), max(timestamp) FROM read_parquet('{paths.EVENTS}')"
    ).fetchone()
    con.close()
    report.rows_out, report.users, report.items = int(stats[0]), int(stats[1]), int(stats[2])
    report.duplicates_removed = staged - report.rows_out
    report.sessions_derived = staged_without_session > 0
    report.start = stats[3].isoformat() if stats[3] is not None else None
    report.end = stats[4].isoformat() if stats[4] is not None else None
    paths.STAGING_EVENTS.unlink(missing_ok=True)
    shutil.rmtree(spill, ignore_errors=True)


def _time_ranges_dir() -> Path:
    return paths.STAGING_EVENTS.parent / "time_ranges"


def _range_plan(con: duckdb.DuckDBPyConnection, staged_rows: str, tail: pa.Table | None, *, staged: int,
                memory_passes: int) -> tuple[list, bool]:
    """How to finalise in time ranges: (the ranges' bounds, whether each range is read straight from the staged rows);
    ([], True) for one pass over all of them. Ranges of FINALISE_RANGE_ROWS where the staging is in time order (read straight from it, if
    its row groups' time statistics say the range queries would read its rows at most FINALISE_MAX_READS times over);
    otherwise ranges only where DuckDB's memory needs them (`memory_passes`), the rows written out per range first."""
    wanted = min(max(memory_passes, math.ceil(staged / FINALISE_RANGE_ROWS)), FINALISE_MAX_PASSES)
    if wanted <= 1:
        return [], True
    quantiles = [round(q / wanted, 6) for q in range(1, wanted)]
    bounds = con.execute(f"SELECT approx_quantile(timestamp::TIMESTAMPTZ, {quantiles}::FLOAT[]) FROM {staged_rows}").fetchall()[0][0]
    bounds = sorted(set(b for b in bounds if b is not None))
    if not bounds:  # every row at one instant
        return [], True
    if staged_reads(bounds, tail) <= FINALISE_MAX_READS:
        return bounds, True
    return (bounds, False) if memory_passes > 1 else ([], True)


def staged_reads(bounds: list, tail: pa.Table | None) -> float:
    """How many times over range queries with these bounds read the staged rows: each row group of the staging file
    (and the last chunk, held in memory) is read by every range its time statistics overlap. 1.0 for rows in time order."""
    edges = [pd.Timestamp(bound).value for bound in bounds]  # nanoseconds
    spans: list[tuple[int | None, int | None, int]] = []
    meta = pq.ParquetFile(paths.STAGING_EVENTS).metadata
    column = meta.schema.names.index("timestamp")
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        stats = group.column(column).statistics
        known = stats is not None and stats.has_min_max
        spans.append((stats.min_raw if known else None, stats.max_raw if known else None, group.num_rows))
    if tail is not None and tail.num_rows:
        low_high = pc.min_max(tail.column("timestamp").cast(pa.int64())).as_py()
        spans.append((low_high["min"], low_high["max"], tail.num_rows))
    rows = sum(n for _, _, n in spans)
    if not rows:
        return 1.0
    ranges = len(edges) + 1
    reads = sum(n * (ranges if low is None else bisect.bisect_right(edges, high) - bisect.bisect_right(edges, low) + 1)
                for low, high, n in spans)
    return reads / rows


def _finalise_by_time(con: duckdb.DuckDBPyConnection, staged_rows: str, tmp_events: Path, *, bounds: list, pushdown: bool,
                      dedup: bool, user_expr: str, salt: str) -> None:
    """The staged rows sorted (EVENTS_ORDER_SQL) and, with `dedup`, without exact duplicates into `tmp_events`, one
    time range at a time (no `bounds`: one range).

    Exact duplicates share their timestamp, so they fall in one range: each range's sort runs on its own rows, in
    memory, the duplicates are the rows equal to the one before, and the ranges written one after the other are in
    order overall. The ranges (`bounds`: about
    equal numbers of rows) are read straight from the staged rows with `pushdown` (DuckDB skips the staging file's row
    groups outside each), else one DuckDB pass first writes the rows out per range. Beyond its memory DuckDB's one-pass
    DISTINCT + ORDER BY spills both to disk: the 100M-event ingest took 516 s and 6.2 GiB that way, 443 s and 3.8 GiB
    in four ranges written out first (bench/bench_scale.py, simulate included)."""
    def literal(bound) -> str:
        return f"TIMESTAMPTZ_NS '{bound.isoformat()}'"

    last: list[pa.Table | None] = [None]  # the last row written: a duplicate may start the next batch or range

    def write_range(rows: str) -> None:
        sorted_rows = con.sql(
            f"SELECT {user_expr} AS user_id, item_id, event_type, timestamp, session_id, category, price, quantity "
            f"FROM {rows} ORDER BY {EVENTS_ORDER_SQL}",
            params=[salt] if salt else None,
        )
        for batch in sorted_rows.to_arrow_reader(FINALISE_BATCH_ROWS):
            table = pa.Table.from_batches([batch]).cast(CANONICAL_ARROW)
            if dedup:
                table = _without_repeats(table, last[0])
            if table.num_rows:
                writer.write_table(table)
                last[0] = table.slice(table.num_rows - 1)

    with pq.ParquetWriter(tmp_events, CANONICAL_ARROW) as writer:
        if pushdown:
            edges = [None, *bounds, None]
            for low, high in zip(edges[:-1], edges[1:]):
                where = " AND ".join([*([f"timestamp >= {literal(low)}"] if low is not None else []),
                                      *([f"timestamp < {literal(high)}"] if high is not None else [])])
                write_range(f"(SELECT * FROM {staged_rows} WHERE {where})" if where else staged_rows)
            return
        folder = _time_ranges_dir()
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        case = " ".join(f"WHEN timestamp < {literal(bound)} THEN {i}" for i, bound in enumerate(bounds))
        try:
            con.execute(f"COPY (SELECT *, CASE {case} ELSE {len(bounds)} END AS _range FROM {staged_rows}) TO '{folder}' "
                        "(FORMAT PARQUET, PARTITION_BY (_range))")
            for part in sorted((int(d.name.split("=", 1)[1]), d) for d in folder.iterdir() if d.name.startswith("_range=")):
                write_range(f"read_parquet('{part[1]}/*.parquet', hive_partitioning = false)")
                shutil.rmtree(part[1])  # its rows are written: the disk it took goes back
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _without_repeats(table: pa.Table, before: pa.Table | None) -> pa.Table:
    """The rows of sorted `table` that differ from the row before them in some column (nulls equal to nulls, as in
    DISTINCT), the first compared with `before` (the last row written, if any)."""
    if table.num_rows == 0:
        return table
    rows = table if before is None else pa.concat_tables([before, table])
    n = rows.num_rows
    repeat = np.ones(n - 1, dtype=bool)
    for name in rows.column_names:
        values = rows.column(name)
        later, earlier = values.slice(1), values.slice(0, n - 1)
        same = pc.or_(pc.fill_null(pc.equal(later, earlier), False), pc.and_(later.is_null(), earlier.is_null()))
        repeat &= same.to_numpy(zero_copy_only=False)
        if not repeat.any():
            break
    if before is None:
        repeat = np.concatenate([[False], repeat])
    return table.filter(pa.array(~repeat)) if repeat.any() else table


def load_events(path: str | Path = paths.EVENTS) -> pd.DataFrame:
    """Read canonical events with their canonical dtypes."""
    frame = pd.read_parquet(path)
    frame["event_type"] = pd.Categorical(frame["event_type"], categories=list(EVENT_TYPES))
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).astype("datetime64[ns, UTC]")
    for col in ("user_id", "item_id", "session_id", "category"):
        frame[col] = frame[col].astype("string")
    return frame
