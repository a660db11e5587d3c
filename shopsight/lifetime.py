"""Full-history ("lifetime") user features: what a transaction log says about a customer beyond the look-back.

Computed from ALL of a user's events before the cutoff (or, with `features.history_days`, from the events in
the `history_days` calendar days before the cutoff's day and the cutoff's day itself), appended to the look-back
features (shopsight.feature_sql.feature_columns), so every dataset, model, audience and the service get them.

* purchase_days_total: distinct calendar days with a purchase; repeat_purchase_days = max(days - 1, 0) (the
  BTYD "frequency");
* first_purchase_days_ago: cutoff - first purchase in days, fractional, 0 without one (BTYD "T");
  purchase_span_days: last purchase day - first purchase day (BTYD "recency" t_x);
* tenure_days: cutoff - first event of any type (fractional); active_days_total: distinct days with an event;
* monetary_total: sum of coalesce(price, 0) * quantity over purchases, net of returns, floored at 0;
  monetary_per_purchase_day = monetary_total / purchase_days_total (0 without purchases);
* returned_units_total and return_rate (returned units / purchased units, 0 when none): a return is a
  `remove_from_cart` of an item the same user purchased strictly earlier (inside the history); in a clickstream
  a removal before the purchase is not a return (shopsight/sources/online_retail.py ingests cancellations so);
* ipt_mean_days, ipt_std_days: mean and sample standard deviation of the gaps between consecutive purchase days
  (0 with fewer than 2 / 3 purchase days).

Days are calendar days in `features.timezone` (a fixed UTC offset: day = floor((epoch ns + offset) / 1 day)).
A null quantity makes a null value term, skipped by the sums (as feature_sql's revenue). All values are finite
and >= 0.

Two implementations, proven equal by tests/test_feature_fast.py, tests/test_feature_sql.py and tests/test_lifetime.py:
* batch (`lifetime_batch`, DuckDB, called per batch of feature_sql with its user numbering): no join of events to
  cutoffs. An event is seen by the sorted cutoffs k0 <= k < k1 (k0 = cutoffs at or before it, k1 = cutoffs whose
  history starts by its day), so three GROUP BYs run once: (user, day) -> first event time over all events before
  the last cutoff; purchases by (user, day, k0); removals with the time of the user's last purchase of the item
  before them (a window over purchases and removals only) by (user, k0, k1 of that purchase). numpy then adds
  up each cutoff's rows;
* request (`lifetime_from_arrays`, numpy): the service's in-memory path, one cutoff per user.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

NS_PER_DAY = 86_400 * 1_000_000_000
# Money is summed as whole millionths of a currency unit: integer sums are exact, so a user's revenue does not depend
# on the order DuckDB's threads add rows in. Float sums did, in the last bits (2.8e-14 or 0.0 for the same net value),
# and that was enough to move an early-stopped MLP to another epoch between two `dvc repro` runs of the same events.
MONEY_SCALE = 1_000_000


def money_sql(expr: str) -> str:
    """SQL: the DOUBLE amount `expr` as whole millionths (BIGINT; NULL stays NULL), rounded half up as money_units."""
    return f"CAST(floor(({expr}) * {MONEY_SCALE} + 0.5) AS BIGINT)"


def money_units(values: np.ndarray) -> np.ndarray:
    """money_sql in numpy: whole millionths as float64 (exact integers below 2**53, so their sums are exact too)."""
    return np.floor(np.asarray(values, dtype=np.float64) * MONEY_SCALE + 0.5)
US_PER_DAY = 86_400 * 1_000_000
_DAY_SHIFT = 1_000_000  # days added before the integer division so that it floors (DuckDB's // truncates)

LIFETIME_COLUMNS = [
    "purchase_days_total",
    "repeat_purchase_days",
    "first_purchase_days_ago",
    "purchase_span_days",
    "tenure_days",
    "active_days_total",
    "monetary_total",
    "monetary_per_purchase_day",
    "returned_units_total",
    "return_rate",
    "ipt_mean_days",
    "ipt_std_days",
]


def local_day_ns(ts_ns: np.ndarray | int, utc_offset_ns: int) -> np.ndarray:
    """Calendar day number (days since 1970-01-01 local) of epoch-ns instants in a fixed-offset timezone."""
    return np.floor_divide(np.asarray(ts_ns, dtype=np.int64) + utc_offset_ns, NS_PER_DAY)


def history_start_ns(cutoff_ns: np.ndarray | int, history_days: int | None, utc_offset_ns: int) -> np.ndarray:
    """First instant of the history of each cutoff: the local midnight `history_days` days before the cutoff's
    day (a cutoff at a midnight: exactly `history_days` days before it); no bound = the smallest int64."""
    cut = np.asarray(cutoff_ns, dtype=np.int64)
    if history_days is None:
        return np.full(cut.shape, np.iinfo(np.int64).min, dtype=np.int64)
    return (local_day_ns(cut, utc_offset_ns) - history_days) * NS_PER_DAY - utc_offset_ns


def _columns(
    n: int,
    cut_ns: np.ndarray,
    active_days: np.ndarray,
    first_event: np.ndarray,
    purchase_days: np.ndarray,
    first_purchase: np.ndarray,
    span: np.ndarray,
    bought: np.ndarray,
    returned_value: np.ndarray,
    units: np.ndarray,
    returned_units: np.ndarray,
    ipt_std: np.ndarray,
) -> np.ndarray:
    """The LIFETIME_COLUMNS matrix (n rows) from per-row aggregates (first_* = epoch ns; unused where none)."""
    out = np.zeros((n, len(LIFETIME_COLUMNS)), dtype=np.float64)
    has_buy = purchase_days > 0
    monetary = np.maximum(bought - returned_value, 0.0)
    returned_units = np.maximum(returned_units, 0.0)
    out[:, 0] = purchase_days
    out[:, 1] = np.maximum(purchase_days - 1, 0)
    out[:, 2] = np.where(has_buy, (cut_ns - np.where(has_buy, first_purchase, cut_ns)).astype(np.float64) / NS_PER_DAY, 0.0)
    out[:, 3] = np.where(has_buy, span, 0.0)
    has_event = active_days > 0
    out[:, 4] = np.where(has_event, (cut_ns - np.where(has_event, first_event, cut_ns)).astype(np.float64) / NS_PER_DAY, 0.0)
    out[:, 5] = active_days
    out[:, 6] = monetary
    out[:, 7] = monetary / np.maximum(purchase_days, 1)
    out[:, 8] = returned_units
    out[:, 9] = np.maximum(np.divide(returned_units, units, out=np.zeros(n), where=units > 0), 0.0)
    out[:, 10] = np.divide(out[:, 3], purchase_days - 1, out=np.zeros(n), where=purchase_days >= 2)
    out[:, 11] = ipt_std
    return out


# ---- batch: DuckDB, per batch of feature_sql (its user numbering _feat_u) ----

_DAY_SQL = f"(epoch_ns(timestamp) // 1000 + {{off_us}} + {_DAY_SHIFT * US_PER_DAY}) // {US_PER_DAY} - {_DAY_SHIFT}"
# one row per (user, day) with its first event's time: a day is seen by a cutoff after that time
_DAYS = f"""SELECT uc, day, mn
  FROM (SELECT user_id::VARCHAR AS u, {_DAY_SQL} AS day, min(epoch_ns(timestamp)) AS mn
        FROM {{source}} WHERE timestamp < {{hi}} {{lo_filter}} GROUP BY ALL)
  JOIN {{users}} USING (u)"""
# the same from feature_sql's pass A (_feat_a: user, session, day counted from lo) where its days are calendar days,
# plus the events before lo: the events are not read again
_DAYS_FROM_PASS_A = f"""SELECT uc, day, mn
  FROM (SELECT u, day, min(mn) AS mn
        FROM (SELECT u, {{lo_day}} + day AS day, mn FROM {{recent}} WHERE day < {{n_days}}
              UNION ALL
              SELECT user_id::VARCHAR AS u, {_DAY_SQL} AS day, epoch_ns(timestamp) AS mn
              FROM {{source}} WHERE timestamp < {{recent_lo}} {{lo_filter}})
        GROUP BY u, day)
  JOIN {{users}} USING (u)"""
# purchases: one row per (user, day, k0), k0 = how many cutoffs are at or before them (one per day when the
# cutoffs are midnights)
_BUYS = f"""SELECT uc, day, k0, mn, bought, units
  FROM (SELECT u, day, k0, min(ts) AS mn, coalesce(sum(value), 0)::DOUBLE AS bought, coalesce(sum(qty), 0)::DOUBLE AS units
        FROM (SELECT *, {{k0}} AS k0
              FROM (SELECT user_id::VARCHAR AS u, epoch_ns(timestamp) AS ts, {_DAY_SQL} AS day,
                           {money_sql("coalesce(price, 0) * quantity")} AS value, quantity::DOUBLE AS qty
                    FROM {{source}} WHERE event_type::VARCHAR = 'purchase' AND timestamp < {{hi}} {{lo_filter}}))
        GROUP BY u, day, k0)
  JOIN {{users}} USING (u)"""
# removals with the time of the same user's last purchase of the item strictly before them (prev); one row per
# (user, k0, kr1): a return for cutoffs k0 <= k < kr1 (kr1: the cutoffs whose history reaches back to prev)
_RETURNS = f"""SELECT uc, k0, kr1, coalesce(sum(value), 0)::DOUBLE AS ret_value, coalesce(sum(qty), 0)::DOUBLE AS ret_units
  FROM (SELECT u, value, qty, {{k0}} AS k0, {{kr1}} AS kr1
        FROM (SELECT u, buy, ts, value, qty,
                     max(CASE WHEN buy THEN ts END) OVER (PARTITION BY u, i ORDER BY ts RANGE BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev
              FROM (SELECT user_id::VARCHAR AS u, item_id AS i, event_type::VARCHAR = 'purchase' AS buy, epoch_ns(timestamp) AS ts,
                           {money_sql("coalesce(price, 0) * quantity")} AS value, quantity::DOUBLE AS qty
                    FROM {{source}}
                    WHERE event_type::VARCHAR IN ('purchase', 'remove_from_cart') AND timestamp < {{hi}} {{lo_filter}}))
        WHERE NOT buy AND prev IS NOT NULL)
  JOIN {{users}} USING (u) GROUP BY uc, k0, kr1"""


def _ts_sql(ns: int) -> str:
    return f"'{pd.Timestamp(int(ns), tz='UTC').isoformat()}'::TIMESTAMPTZ"


def lifetime_batch(
    con: duckdb.DuckDBPyConnection,
    source: str,
    cutoff_ns: list[int],
    n_users: int,
    history_days: int | None = None,
    utc_offset_ns: int = 0,
    users: str = "_feat_u",
    recent: tuple[str, int, int] | None = None,
) -> list[np.ndarray]:
    """LIFETIME_COLUMNS of every user of `users` (a table u -> uc, uc = 0..n_users-1) at each sorted cutoff:
    one (n_users x columns) matrix per cutoff. Users without events in a cutoff's history get zeros.
    `recent` = (table, lo ns, n_days): feature_sql's pass-A table of (u, s, day = days since lo, mn) rows, reused for
    the user-days from lo (a local midnight) on, so only the events before lo are read again.

    No join of events to cutoffs: an event is seen by the cutoffs k0 <= k < k1 (k0 = the cutoffs at or before
    it, k1 = those whose history starts by its day), so three GROUP BYs (user-days, purchases, returns) run once
    and numpy adds up each cutoff's rows (K cutoffs: K passes over the small grouped tables)."""
    cut = np.asarray(cutoff_ns, dtype=np.int64)
    K = len(cut)
    lo = history_start_ns(cut, history_days, utc_offset_ns)
    fmt = {
        "source": source,
        "users": users,
        "off_us": utc_offset_ns // 1000,
        "hi": _ts_sql(int(cut.max())),
        "lo_filter": "" if history_days is None else f"AND timestamp >= {_ts_sql(int(lo.min()))}",
    }

    def at_or_after(ts: str, bounds: np.ndarray) -> str:
        return " + ".join(f"({ts} >= {int(b)})::INTEGER" for b in bounds)

    if recent is None:
        days = _arrays(con, _DAYS.format(**fmt))
    else:
        table, recent_lo, n_days = recent
        assert (recent_lo + utc_offset_ns) % NS_PER_DAY == 0, "pass-A days are calendar days only from a local midnight"
        lo_day = int(local_day_ns(recent_lo, utc_offset_ns))
        days = _arrays(con, _DAYS_FROM_PASS_A.format(recent=table, lo_day=lo_day, n_days=n_days, recent_lo=_ts_sql(recent_lo), **fmt))
    buys = _arrays(con, _BUYS.format(k0=at_or_after("ts", cut), **fmt))
    kr1 = str(K) if history_days is None else at_or_after("prev", lo)
    rets = _arrays(con, _RETURNS.format(k0=at_or_after("ts", cut), kr1=kr1, **fmt))

    # histories start at local midnights: a day is inside cutoff k's history when day >= its first day (k < k1)
    lo_days = local_day_ns(lo, utc_offset_ns)

    def seen_until(day: np.ndarray) -> np.ndarray:
        return np.full(len(day), K) if history_days is None else np.searchsorted(lo_days, day, side="right")

    order = np.lexsort((days["mn"], days["uc"]))  # by user, then day (a later day starts later)
    d_uc, d_mn = days["uc"][order].astype(np.intp), days["mn"][order]
    d_k0, d_k1 = np.searchsorted(cut, d_mn, side="right"), seen_until(days["day"][order])
    order = np.lexsort((buys["k0"], buys["day"], buys["uc"]))
    b_uc, b_day, b_k0 = buys["uc"][order].astype(np.intp), buys["day"][order], buys["k0"][order]
    b_mn, bought, units = buys["mn"][order], buys["bought"][order], buys["units"][order]
    b_k1 = seen_until(b_day)
    r_uc = rets["uc"].astype(np.intp)
    out = []
    for k in range(K):
        d = np.flatnonzero((d_k0 <= k) & (k < d_k1))
        active = np.bincount(d_uc[d], minlength=n_users).astype(np.float64)
        first = _first_per_user(d_uc[d], d_mn[d], n_users)  # rows sorted by user, then time
        b = np.flatnonzero((b_k0 <= k) & (k < b_k1))
        pdays, span, ipt_std = _purchase_day_stats(*_first_of_runs(b_uc[b], b_day[b]), n_users)
        first_buy = _first_per_user(b_uc[b], b_mn[b], n_users)
        r = (rets["k0"] <= k) & (k < rets["kr1"])
        out.append(_columns(
            n_users, np.full(n_users, cut[k]), active, first, pdays, first_buy, span,
            # millionths: whole numbers, so these sums are exact in any row order (DuckDB's groups come in none)
            np.bincount(b_uc[b], bought[b], minlength=n_users) / MONEY_SCALE,
            np.bincount(r_uc[r], rets["ret_value"][r], minlength=n_users) / MONEY_SCALE,
            np.bincount(b_uc[b], units[b], minlength=n_users), np.bincount(r_uc[r], rets["ret_units"][r], minlength=n_users),
            ipt_std,
        ))
    return out


def _first_per_user(users: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Each user's first value in arrays sorted by user (then by the value's order); int64 max for none."""
    out = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    first = np.ones(len(users), dtype=bool)
    first[1:] = users[1:] != users[:-1]
    out[users[first]] = values[first]
    return out


def _first_of_runs(users: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (user, key) pairs of arrays sorted by user then key."""
    first = np.ones(len(users), dtype=bool)
    first[1:] = (users[1:] != users[:-1]) | (keys[1:] != keys[:-1])
    return users[first], keys[first]


def _purchase_day_stats(bu: np.ndarray, bday: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(purchase days, span = last - first purchase day, sample std of the gaps between consecutive purchase days)
    per user from the distinct (user, day) purchase pairs sorted by user, then day."""
    pdays = np.bincount(bu, minlength=n).astype(np.float64)
    span = np.zeros(n)
    if len(bu):
        last = np.ones(len(bu), dtype=bool)
        last[:-1] = bu[1:] != bu[:-1]
        first = np.ones(len(bu), dtype=bool)
        first[1:] = bu[1:] != bu[:-1]
        span[bu[last]] = (bday[last] - bday[first]).astype(np.float64)
    same = bu[1:] == bu[:-1]
    gaps = (bday[1:] - bday[:-1])[same].astype(np.float64)
    gu = bu[1:][same]
    ng = np.bincount(gu, minlength=n).astype(np.float64)
    s1 = np.bincount(gu, gaps, minlength=n)
    s2 = np.bincount(gu, gaps * gaps, minlength=n)
    # integer gaps: n * sum(g^2) - sum(g)^2 is exact, so equal gaps give exactly 0
    var = np.divide(ng * s2 - s1 * s1, ng * (ng - 1), out=np.zeros(n), where=ng >= 2)
    return pdays, span, np.sqrt(np.maximum(var, 0.0))


def _arrays(con: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None) -> dict[str, np.ndarray]:
    table = con.sql(sql, params=params).to_arrow_table().combine_chunks()
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


# ---- request: numpy, one cutoff per user ----


def lifetime_from_arrays(
    user: np.ndarray,
    timestamp_ns: np.ndarray,
    is_purchase: np.ndarray,
    is_removal: np.ndarray,
    item: np.ndarray,
    price: np.ndarray,
    quantity: np.ndarray,
    cutoff_ns: np.ndarray,
    history_days: int | None = None,
    utc_offset_ns: int = 0,
) -> np.ndarray:
    """LIFETIME_COLUMNS (one row per user 0..len(cutoff_ns)-1) from coded events (item: codes >= -1, equal codes =
    same item; price/quantity: NaN for null); each user's cutoff is `cutoff_ns[u]` (epoch ns)."""
    n = len(cutoff_ns)
    cut = np.asarray(cutoff_ns, dtype=np.int64)
    lo = history_start_ns(cut, history_days, utc_offset_ns)
    keep = (timestamp_ns < cut[user]) & (timestamp_ns >= lo[user])
    u, ts, item = user[keep], timestamp_ns[keep], item[keep]
    buy, rem = is_purchase[keep], is_removal[keep]
    day = local_day_ns(ts, utc_offset_ns)

    def count(groups: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(groups, weights=weights, minlength=n).astype(np.float64)

    def extreme(groups, values, ufunc, initial) -> np.ndarray:
        out = np.full(n, initial, dtype=np.int64)
        ufunc.at(out, groups, values)
        return out

    user_days = _distinct_pairs(u, day)
    active = count(user_days[0])
    first = extreme(u, ts, np.minimum, np.iinfo(np.int64).max)
    bu, bday = _distinct_pairs(u[buy], day[buy])
    first_buy = extreme(u[buy], ts[buy], np.minimum, np.iinfo(np.int64).max)
    pdays, span, ipt_std = _purchase_day_stats(bu, bday, n)

    value = np.nan_to_num(money_units(np.nan_to_num(price[keep], nan=0.0) * quantity[keep]), nan=0.0)
    qty = np.nan_to_num(quantity[keep], nan=0.0)
    # a removal is a return when the user bought the item strictly earlier (inside the history)
    item = item.astype(np.int64) + 1  # a null item (code -1 from a plain factorize) is one value, as SQL's IS NOT DISTINCT FROM
    pair = u.astype(np.int64) * (int(item.max()) + 1 if len(item) else 1) + item
    codes, inverse = np.unique(pair, return_inverse=True)
    first_pair_buy = np.full(len(codes), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_pair_buy, inverse[buy], ts[buy])
    ret = rem & (first_pair_buy[inverse] < ts)
    return _columns(
        n, cut, active, first, pdays, first_buy, span,
        count(u[buy], value[buy]) / MONEY_SCALE, count(u[ret], value[ret]) / MONEY_SCALE, count(u[buy], qty[buy]), count(u[ret], qty[ret]), ipt_std,
    )


def _distinct_pairs(users: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, key) pairs sorted by user then key, as two arrays."""
    if len(users) == 0:
        return users.astype(np.intp), keys
    order = np.lexsort((keys, users))
    u, k = users[order], keys[order]
    first = np.ones(len(u), dtype=bool)
    first[1:] = (u[1:] != u[:-1]) | (k[1:] != k[:-1])
    return u[first].astype(np.intp), k[first]
