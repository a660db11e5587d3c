"""The user features at a set of cutoffs: two DuckDB aggregation passes over the events, then numpy.

The same code serves the batch pipeline (events from a Parquet file, many cutoffs, out of core) and the
service (a few users' events from a request, as a pandas frame), so training and serving cannot drift apart.

How it stays exact without joining events to cutoffs (bench/bench_features.py measures it):

* Day buckets and segments. Cutoffs that share a time of day are whole days apart, so every window
  `[cutoff - w days, cutoff)` is a run of whole days counted from `lo = first cutoff - look-back`. The
  window edges (`cutoff - w` and `cutoff` for every cutoff and window) cut the days into segments (at most
  63 per batch of cutoffs, so a set of segments is one UBIGINT bit mask); every window is a contiguous run
  of segments.
* Pass A: one GROUP BY (user, session, day) over the events: count per event type, revenue, view prices,
  first/last/last-purchase time (run up to the last cutoff + horizon, so labels come from it too).
  Rolled up to (user, segment) rows (with distinct days for active days); numpy adds a window's
  segments (running sums for the counts, which are exact; plain sums for the float sums).
* Pass B: one GROUP BY (user, item, category) carrying the bit mask of the segments the pair occurs in.
  Distinct items / categories / sessions in a window = keys whose mask meets the window's mask, counted per
  user with one FILTER per window (sessions take their masks from the pass-A rows). So there is no
  COUNT(DISTINCT) over events x cutoffs, no window function and no sort of the events.
* Users are numbered in user_id order once; after the two passes everything is small integer-keyed data.

Where the time goes (10.4M events, 6 cutoffs, 2 idle cores; bench/bench_features.py): pass A 0.93 s,
pass B 0.85 s, the (user, segment) rollup 0.42 s, the per-user distinct counts and labels 0.60 s, numpy
assembly 0.73 s (much of it first touch of the ~140 MB result), writing the Parquet ~0.45 s; one DuckDB
`GROUP BY user_id` pass takes ~0.7 s. The two passes alone are ~2.5x that pass: each is a hash aggregate
over all events with about a million (pass A) or three million (pass B) groups.

Full-history columns (shopsight/lifetime.py, appended to feature_columns): per batch, one more GROUP BY
(user, day) over the events before the last cutoff and a purchases-x-cutoffs join, keyed by the batch's user
numbering; labels may have a horizon per cutoff (calibration/holdout splits).

Semantics (shared with shopsight/feature_fast.py): windows are whole days before the cutoff; active days
are day buckets counted from `cutoff - look-back`; a null session or item counts as one value, null
categories are skipped; revenue sums coalesce(price, 0) * quantity over purchases.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from shopsight.lifetime import LIFETIME_COLUMNS, MONEY_SCALE, lifetime_batch, money_sql

EVENT_COUNTS = ("view", "cart", "remove_from_cart", "favorite", "purchase")
NS_PER_DAY = 86_400 * 1_000_000_000
MAX_SEGMENTS = 63  # one bit per segment in a UBIGINT mask
_NO_TIME = -(2**63 - 1)  # "no purchase" marker for the last purchase time

_local = threading.local()


def connection() -> duckdb.DuckDBPyConnection:
    """One in-memory DuckDB connection per thread (connecting costs ~15 ms; a query on a small frame ~1 ms)."""
    con = getattr(_local, "con", None)
    if con is None:
        con = duckdb.connect()
        con.execute("SET TimeZone='UTC'")
        con.execute("SET enable_progress_bar=false")
        _local.con = con
    return con


def feature_columns(windows_days: list[int]) -> list[str]:
    """The ordered feature names for these windows (the model's input order)."""
    cols: list[str] = []
    for w in sorted(windows_days):
        cols += [f"{e}s_{w}d" for e in EVENT_COUNTS]
        cols += [f"sessions_{w}d", f"active_days_{w}d", f"revenue_{w}d"]
    cols += [
        "recency_days",
        "purchase_recency_days",
        "first_seen_days",
        "distinct_items",
        "distinct_categories",
        "mean_view_price",
        "cart_rate",
        "purchase_rate",
        "events_per_session",
    ]
    return cols + LIFETIME_COLUMNS


def _output_columns(windows: list[int]) -> list[str]:
    """The float columns in the order compute_user_features returns them (between user_id and label)."""
    cols: list[str] = []
    for w in windows:
        cols += [f"{e}s_{w}d" for e in EVENT_COUNTS] + [f"active_days_{w}d", f"revenue_{w}d"]
    cols += ["recency_days", "purchase_recency_days", "first_seen_days", "mean_view_price"]
    cols += [f"sessions_{w}d" for w in windows]
    cols += ["distinct_items", "distinct_categories", "cart_rate", "purchase_rate", "events_per_session"]
    return cols + LIFETIME_COLUMNS


def _utc(ts) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.floor("us")  # DuckDB's TIMESTAMPTZ precision


def _ts_sql(ts: pd.Timestamp) -> str:
    return f"'{ts.isoformat()}'::TIMESTAMPTZ"


@dataclass(frozen=True)
class _Plan:
    """Day buckets and segments for cutoffs (sorted, same time of day) and windows (sorted)."""

    cutoffs: list[pd.Timestamp]
    windows: list[int]
    lo: pd.Timestamp  # day 0 starts here
    cidx: np.ndarray  # each cutoff's day index
    bounds: np.ndarray  # segment s = days [bounds[s], bounds[s + 1])

    @classmethod
    def make(cls, cutoffs: list[pd.Timestamp], windows: list[int]) -> _Plan:
        lo = cutoffs[0] - pd.Timedelta(days=windows[-1])
        cidx = np.array([(c.value - lo.value) // NS_PER_DAY for c in cutoffs], dtype=np.int64)
        bounds = np.array(sorted({int(b) for c in cidx for b in (c, *(c - w for w in windows))}), dtype=np.int64)
        return cls(cutoffs, windows, lo, cidx, bounds)

    @property
    def n_days(self) -> int:
        return int(self.bounds[-1])

    @property
    def n_seg(self) -> int:
        return len(self.bounds) - 1

    def seg_of_day(self) -> np.ndarray:
        return np.searchsorted(self.bounds, np.arange(self.n_days), side="right") - 1

    def segments(self, j: int, w: int) -> tuple[int, int]:
        """Segments [a, b) that make up window w of cutoff j."""
        return int(np.searchsorted(self.bounds, self.cidx[j] - w)), int(np.searchsorted(self.bounds, self.cidx[j]))


def _batches(cutoffs: list[pd.Timestamp], windows: list[int]) -> list[list[pd.Timestamp]]:
    """Split sorted same-time-of-day cutoffs into runs whose window edges make at most MAX_SEGMENTS segments."""
    out: list[list[pd.Timestamp]] = []
    cur: list[pd.Timestamp] = []
    edges: set[int] = set()
    for c in cutoffs:
        mine = {c.value // NS_PER_DAY - w for w in (0, *windows)}
        if cur and len(edges | mine) - 1 > MAX_SEGMENTS:
            out.append(cur)
            cur, edges = [], set()
        cur.append(c)
        edges |= mine
    out.append(cur)
    return out


_TYPE_COUNTS = ", ".join(f"count(*) FILTER (WHERE et = '{e}') AS n_{e}" for e in EVENT_COUNTS)
_PASS_A = f"""CREATE OR REPLACE TEMP TABLE _feat_a AS
  SELECT u, s, day, count(*) AS n, {_TYPE_COUNTS},
         sum({money_sql("coalesce(price, 0) * quantity")}) FILTER (WHERE et = 'purchase') AS rev,
         sum({money_sql("price")}) FILTER (WHERE et = 'view') AS vps, count(price) FILTER (WHERE et = 'view') AS vpn,
         min(ts) AS mn, max(ts) AS mx, max(ts) FILTER (WHERE et = 'purchase') AS pmx
  FROM (SELECT user_id::VARCHAR AS u, session_id AS s, event_type::VARCHAR AS et, price, quantity,
               epoch_ns(timestamp) AS ts, (epoch_ns(timestamp) - {{lo_ns}}) // {NS_PER_DAY} AS day
        FROM {{source}} WHERE timestamp >= {{lo}} AND timestamp < {{hi}})
  GROUP BY ALL"""
_PASS_B = f"""CREATE OR REPLACE TEMP TABLE _feat_b AS
  SELECT u, i, c, bit_or(list_extract($bits::UBIGINT[], day + 1)) AS m
  FROM (SELECT user_id::VARCHAR AS u, item_id AS i, category AS c,
               (epoch_ns(timestamp) - {{lo_ns}}) // {NS_PER_DAY} AS day
        FROM {{source}} WHERE timestamp >= {{lo}} AND timestamp < {{hi}})
  GROUP BY ALL"""
_USERS = """CREATE OR REPLACE TEMP TABLE _feat_u AS
  SELECT u, (row_number() OVER (ORDER BY u) - 1)::INTEGER AS uc FROM (SELECT DISTINCT u FROM _feat_a)"""
_ROLLUP = f"""SELECT uc, list_extract($seg::INTEGER[], day + 1) AS seg, count(DISTINCT day)::INTEGER AS days,
  sum(n)::BIGINT AS n, {", ".join(f"sum(n_{e})::BIGINT AS n_{e}" for e in EVENT_COUNTS)},
  coalesce(sum(rev), 0)::DOUBLE AS rev, coalesce(sum(vps), 0)::DOUBLE AS vps, sum(vpn)::BIGINT AS vpn,
  min(mn) AS mn, max(mx) AS mx, coalesce(max(pmx), {_NO_TIME}) AS pmx
  FROM _feat_a JOIN _feat_u USING (u) WHERE day < {{n_days}} GROUP BY ALL"""
# Does every item have one category? Then the (user, item, category) rows are the distinct (user, item) pairs.
_ITEM_IS_KEY = "SELECT count(*) = count(DISTINCT i) FROM (SELECT DISTINCT i, c FROM _feat_b)"
_PER_USER = """WITH
  sess AS (SELECT u, {sess_counts} FROM (SELECT u, bit_or(list_extract($bits::UBIGINT[], day + 1)) AS m
             FROM _feat_a WHERE day < {n_days} GROUP BY u, s) GROUP BY u),
  item AS (SELECT u, {item_counts} FROM {items} GROUP BY u),
  cat AS (SELECT u, {cat_counts} FROM (SELECT u, bit_or(m) AS m FROM _feat_b WHERE c IS NOT NULL GROUP BY u, c) GROUP BY u),
  lab AS (SELECT u, bit_or(list_extract($label_bits::UBIGINT[], day + 1)) AS label_mask
            FROM _feat_a WHERE n_purchase > 0 AND day >= {first_cut} GROUP BY u)
  SELECT uc, {coalesced}, coalesce(lab.label_mask, 0) AS label_mask
  FROM _feat_u LEFT JOIN sess USING (u) LEFT JOIN item USING (u) LEFT JOIN cat USING (u) LEFT JOIN lab USING (u)"""
_TEMP_TABLES = ("_feat_a", "_feat_b", "_feat_u")


def _arrays(con: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None) -> dict[str, np.ndarray]:
    """A query's columns as numpy arrays (via Arrow: several times cheaper than fetchnumpy for wide results)."""
    table = con.sql(sql, params=params).to_arrow_table().combine_chunks()
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def _mask(a: int, b: int) -> int:
    """Bit mask of segments [a, b)."""
    return ((1 << b) - 1) ^ ((1 << a) - 1)


def _counts_sql(prefix: str, masks: list[int]) -> str:
    """Per user: how many keys (rows of (user, key, mask)) meet each window's segment mask."""
    return ", ".join(f"count(*) FILTER (WHERE (m & {m}::UBIGINT) != 0)::DOUBLE AS {prefix}{k}" for k, m in enumerate(masks))


def _segment_bits(plan: _Plan) -> list[int]:
    """Each day's segment as a one-bit mask (list index = day)."""
    return [1 << int(s) for s in plan.seg_of_day()]


def event_passes(plan: _Plan, source: str, horizon_days: int | None) -> list[tuple[str, dict | None]]:
    """The two aggregation passes over the events (SQL and parameters) that create _feat_a and _feat_b
    (`horizon_days`: the longest label window of the batch's cutoffs)."""
    fmt = {"source": source, "lo_ns": plan.lo.value, "lo": _ts_sql(plan.lo)}
    return [
        (_PASS_A.format(hi=_ts_sql(plan.cutoffs[-1] + pd.Timedelta(days=horizon_days or 0)), **fmt), None),
        (_PASS_B.format(hi=_ts_sql(plan.cutoffs[-1]), **fmt), {"bits": _segment_bits(plan)}),
    ]


def _batch(
    con: duckdb.DuckDBPyConnection, source: str, plan: _Plan, horizons: list[int] | None, history_days: int | None, utc_offset_ns: int
):
    """The rows of one batch of cutoffs (see _assemble): two passes over the events, then small queries, then the
    full-history columns (shopsight/lifetime.py). `horizons`: each cutoff's label window in days (None: no labels)."""
    windows, L = plan.windows, plan.windows[-1]
    seg_of_day = plan.seg_of_day()
    horizon_days = max(horizons) if horizons is not None else None
    bits = _segment_bits(plan)
    label_bits = [0] * (plan.n_days + (horizon_days or 0))
    for j, c in enumerate(plan.cidx):
        for d in range(int(c), int(c) + (horizons[j] if horizons is not None else 0)):
            label_bits[d] |= 1 << j
    n_cut = len(plan.cutoffs)
    sess_masks = [_mask(*plan.segments(j, w)) for j in range(n_cut) for w in windows]
    l_masks = [_mask(*plan.segments(j, L)) for j in range(n_cut)]
    try:
        for sql, params in event_passes(plan, source, horizon_days):
            con.execute(sql, params)
        con.execute(_USERS)
        users = con.execute("SELECT u FROM _feat_u ORDER BY uc").fetchnumpy()["u"]
        roll = _arrays(con, _ROLLUP.format(n_days=plan.n_days), {"seg": [int(s) for s in seg_of_day]})
        ((item_is_key,),) = con.execute(_ITEM_IS_KEY).fetchall()
        per_user_sql = _PER_USER.format(
            sess_counts=_counts_sql("s", sess_masks),
            item_counts=_counts_sql("i", l_masks),
            cat_counts=_counts_sql("c", l_masks),
            items="_feat_b" if item_is_key else "(SELECT u, bit_or(m) AS m FROM _feat_b GROUP BY u, i)",
            n_days=plan.n_days,
            first_cut=int(plan.cidx[0]),
            coalesced=", ".join(
                f"coalesce({p}{k}, 0) AS {p}{k}" for p, n in (("s", len(sess_masks)), ("i", n_cut), ("c", n_cut)) for k in range(n)
            ),
        )
        per_user = _arrays(con, per_user_sql, {"bits": bits, "label_bits": label_bits})
        # pass A's days are calendar days when the cutoffs are midnights of the timezone: the lifetime user-days reuse it
        recent = ("_feat_a", plan.lo.value, plan.n_days) if (plan.lo.value + utc_offset_ns) % NS_PER_DAY == 0 else None
        lifetime = lifetime_batch(con, source, [c.value for c in plan.cutoffs], len(users), history_days, utc_offset_ns, recent=recent)
    finally:
        for t in _TEMP_TABLES:
            con.execute(f"DROP TABLE IF EXISTS {t}")
    return _assemble(plan, users, roll, per_user, horizon_days, lifetime)


def _assemble(plan: _Plan, users: np.ndarray, roll: dict, per_user: dict, horizon_days: int | None, lifetime: list[np.ndarray]) -> dict:
    """The batch's rows (cutoff order, then user order) as one column-major float matrix plus keys and labels.

    Fresh memory is slow to touch, so one (segment x user) buffer of each type is reused metric by metric.
    """
    windows, L = plan.windows, plan.windows[-1]
    n_seg, n_users, n_cut = plan.n_seg, len(users), len(plan.cutoffs)
    uc, seg = roll["uc"].astype(np.intp), roll["seg"].astype(np.intp)
    fbuf = np.empty((n_seg + 1, n_users), dtype=np.float64)
    ibuf = np.empty((n_seg, n_users), dtype=np.int64)
    seg_l = [plan.segments(j, L) for j in range(n_cut)]

    def running(col: str) -> np.ndarray:
        """Running sums of a count over segments (exact: whole numbers below 2**53): window [a, b) = r[b] - r[a]."""
        fbuf.fill(0.0)
        fbuf[seg + 1, uc] = roll[col]
        for r in range(2, n_seg + 1):
            fbuf[r] += fbuf[r - 1]
        return fbuf

    def dense(col: str, fill, buf: np.ndarray) -> np.ndarray:
        buf.fill(fill)
        buf[seg, uc] = roll[col]
        return buf

    n_run = running("n")
    presents = [np.flatnonzero(n_run[b] != n_run[a]) for a, b in seg_l]
    n_events = [n_run[b, p] - n_run[a, p] for (a, b), p in zip(seg_l, presents)]
    starts = np.cumsum([0] + [len(p) for p in presents])
    names = _output_columns(windows)
    col = {name: k for k, name in enumerate(names)}
    matrix = np.empty((int(starts[-1]), len(names)), dtype=np.float64, order="F")

    def fill(name: str, per_cutoff) -> None:
        """Column `name` for every cutoff j from per_cutoff(j, present)."""
        k = col[name]
        for j, p in enumerate(presents):
            matrix[starts[j]:starts[j + 1], k] = per_cutoff(j, p)

    def window_sum(run: np.ndarray, w: int):
        def values(j, p):
            a, b = plan.segments(j, w)
            return run[b, p] - run[a, p]
        return values

    for metric, prefix in [*((f"n_{e}", f"{e}s") for e in EVENT_COUNTS), ("days", "active_days")]:
        run = running(metric)
        for w in windows:
            fill(f"{prefix}_{w}d", window_sum(run, w))
    run = running("vpn")
    n_prices = [window_sum(run, L)(j, p) for j, p in enumerate(presents)]
    # money in whole millionths (exact sums in any order), added per window, never differenced
    rev = dense("rev", 0.0, fbuf[:n_seg])
    for w in windows:
        fill(f"revenue_{w}d", lambda j, p, w=w: rev[slice(*plan.segments(j, w)), p].sum(axis=0) / MONEY_SCALE)
    vps = dense("vps", 0.0, fbuf[:n_seg])

    def mean_price(j, p):
        total = vps[slice(*seg_l[j]), p].sum(axis=0) / MONEY_SCALE
        return np.divide(total, n_prices[j], out=np.zeros_like(total), where=n_prices[j] > 0)

    fill("mean_view_price", mean_price)
    c_ns = [c.value for c in plan.cutoffs]
    last = dense("mx", _NO_TIME, ibuf)
    fill("recency_days", lambda j, p: (c_ns[j] - last[slice(*seg_l[j]), p].max(axis=0)).astype(np.float64) / NS_PER_DAY)
    last_buy = dense("pmx", _NO_TIME, ibuf)

    def purchase_recency(j, p):
        t = last_buy[slice(*seg_l[j]), p].max(axis=0)
        return np.where(t == _NO_TIME, float(L + 1), (c_ns[j] - t).astype(np.float64) / NS_PER_DAY)

    fill("purchase_recency_days", purchase_recency)
    first = dense("mn", np.iinfo(np.int64).max, ibuf)
    fill("first_seen_days", lambda j, p: (c_ns[j] - first[slice(*seg_l[j]), p].min(axis=0)).astype(np.float64) / NS_PER_DAY)

    by_user = np.zeros(n_users, dtype=np.float64)

    def user_values(name: str) -> np.ndarray:
        by_user[per_user["uc"]] = per_user[name]
        return by_user

    for j, p in enumerate(presents):
        rows = slice(starts[j], starts[j + 1])
        for i, w in enumerate(windows):
            matrix[rows, col[f"sessions_{w}d"]] = user_values(f"s{j * len(windows) + i}")[p]
        matrix[rows, col["distinct_items"]] = user_values(f"i{j}")[p]
        matrix[rows, col["distinct_categories"]] = user_values(f"c{j}")[p]
        views = matrix[rows, col[f"views_{L}d"]] + 1.0
        matrix[rows, col["cart_rate"]] = matrix[rows, col[f"carts_{L}d"]] / views
        matrix[rows, col["purchase_rate"]] = matrix[rows, col[f"purchases_{L}d"]] / views
        matrix[rows, col["events_per_session"]] = n_events[j] / np.maximum(matrix[rows, col[f"sessions_{L}d"]], 1)
        matrix[rows, col[LIFETIME_COLUMNS[0]] : col[LIFETIME_COLUMNS[-1]] + 1] = lifetime[j][p]
    labels = None
    if horizon_days is not None:
        label_mask = np.zeros(n_users, dtype=np.uint64)
        label_mask[per_user["uc"]] = per_user["label_mask"]
        labels = np.concatenate(
            [((label_mask[p] >> np.uint64(j)) & np.uint64(1)).astype(np.int64) for j, p in enumerate(presents)]
        )
    cutoff_ns = np.repeat(np.array(c_ns, dtype=np.int64), [len(p) for p in presents])
    return {"matrix": matrix, "cutoff_ns": cutoff_ns, "user_id": users[np.concatenate(presents)], "label": labels}


def plan_batches(cutoffs: list[pd.Timestamp], windows_days: list[int]) -> list[_Plan]:
    """The batches compute_user_features runs for these cutoffs: cutoffs a whole number of days apart share day
    buckets (one group per time of day), split so that each batch has at most MAX_SEGMENTS segments."""
    windows = sorted(windows_days)
    groups: dict[int, list[pd.Timestamp]] = {}
    for c in cutoffs:
        ts = _utc(c)
        groups.setdefault(ts.value % NS_PER_DAY, []).append(ts)
    return [_Plan.make(batch, windows) for same_time in groups.values() for batch in _batches(sorted(set(same_time)), windows)]


def compute_user_features(
    events: pd.DataFrame | str | Path,
    cutoffs: list[pd.Timestamp],
    windows_days: list[int],
    horizon_days: int | Mapping[pd.Timestamp, int] | None = None,
    history_days: int | None = None,
    utc_offset_ns: int = 0,
) -> pd.DataFrame:
    """Rows = (cutoff, user_id) for users with events in [cutoff - look-back, cutoff); feature columns as float64.

    `events` is a canonical frame or a Parquet path. With `horizon_days` (one for all cutoffs, or a mapping
    cutoff -> days), a `label` column says whether the user purchased in [cutoff, cutoff + horizon). Rows come
    ordered by cutoff (per time of day), then user_id. The full-history columns (shopsight/lifetime.py) read the
    events before each cutoff, bounded by `history_days`, with days in the timezone of `utc_offset_ns`.
    """
    windows = sorted(windows_days)
    if not cutoffs:
        raise ValueError("compute_user_features needs at least one cutoff")
    if isinstance(horizon_days, Mapping):
        per_cutoff = {_utc(c): int(h) for c, h in horizon_days.items()}
        missing = [c for c in cutoffs if _utc(c) not in per_cutoff]
        if missing:
            raise ValueError(f"compute_user_features: no horizon_days for cutoff(s) {missing[:3]}")

        def horizons_of(plan: _Plan) -> list[int] | None:
            return [per_cutoff[c] for c in plan.cutoffs]
    else:
        def horizons_of(plan: _Plan) -> list[int] | None:
            return None if horizon_days is None else [int(horizon_days)] * len(plan.cutoffs)
    con = connection()
    if isinstance(events, (str, Path)):
        source = f"read_parquet('{Path(events).as_posix()}')"
    else:
        con.register("_events", events)
        source = "_events"
    parts = []
    try:
        for plan in plan_batches(cutoffs, windows):
            parts.append(_batch(con, source, plan, horizons_of(plan), history_days, utc_offset_ns))
    finally:
        if source == "_events":
            con.unregister("_events")
    return _frame(parts, windows, horizon_days)  # labels when horizon_days is given (int or mapping)


def _frame(parts: list[dict], windows: list[int], horizon_days: int | None) -> pd.DataFrame:
    """One DataFrame from the batches' blocks (a single batch is used as is, without copies)."""
    if len(parts) == 1:
        block = parts[0]
    else:
        block = {k: None if parts[0][k] is None else np.concatenate([p[k] for p in parts]) for k in parts[0]}
        block["matrix"] = np.asfortranarray(block["matrix"])
    frame = pd.DataFrame(block["matrix"], columns=_output_columns(windows), copy=False)
    frame.insert(0, "user_id", pd.array(block["user_id"], dtype="string"))
    frame.insert(0, "cutoff", pd.DatetimeIndex(block["cutoff_ns"].view("datetime64[ns]")).tz_localize("UTC"))
    if horizon_days is not None:
        frame["label"] = block["label"]
    return frame
