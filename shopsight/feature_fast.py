"""The user features of shopsight/feature_sql.py computed in memory with numpy, for request-sized data.

The DuckDB query plans and runs with a fixed cost of tens of milliseconds however few events it sees; a
request of one user with ten events needs well under a millisecond of numpy. Every user carries their own
cutoff (a request may give each history its own `as_of`), and the values equal those of
`feature_sql.compute_user_features(events, [cutoff], windows)` for that user's cutoff: windows are the whole
days before the cutoff (`[cutoff - w days, cutoff)`), active days are day buckets counted from
`cutoff - look-back`, distinct sessions/items count a null key as one value, categories skip nulls.
tests/test_feature_fast.py proves the two paths equal on random frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from shopsight.feature_sql import EVENT_COUNTS, NS_PER_DAY, feature_columns
from shopsight.lifetime import LIFETIME_COLUMNS, MONEY_SCALE, lifetime_from_arrays, money_units

N_TYPES = len(EVENT_COUNTS)
_PURCHASE = EVENT_COUNTS.index("purchase")
_VIEW = EVENT_COUNTS.index("view")
_CART = EVENT_COUNTS.index("cart")
_REMOVE = EVENT_COUNTS.index("remove_from_cart")


@dataclass(frozen=True)
class EventArrays:
    """Events as integer-coded numpy arrays (one entry per event); codes are only compared for equality.

    user: 0..n_users-1; event: index into EVENT_COUNTS, -1 for any other type; session/item: code per
    distinct value, a null being one value of its own (as SQL DISTINCT counts it); category: -1 for null;
    timestamp_ns: UTC epoch nanoseconds at microsecond precision (what DuckDB sees); price: NaN for null;
    quantity: float, NaN for null.
    """

    user: np.ndarray
    timestamp_ns: np.ndarray
    event: np.ndarray
    session: np.ndarray
    item: np.ndarray
    category: np.ndarray
    price: np.ndarray
    quantity: np.ndarray


def features_from_arrays(
    ev: EventArrays, cutoff_ns: np.ndarray, windows_days: list[int], history_days: int | None = None, utc_offset_ns: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(present, matrix): whether each user has events in [cutoff - look-back, cutoff), and their features.

    `cutoff_ns[u]` is user u's cutoff (epoch ns, microsecond precision); the matrix has one row per user in
    `feature_columns(windows_days)` order (rows of absent users are zeros). The full-history columns
    (shopsight/lifetime.py) read every event before the cutoff, bounded by `history_days`.
    """
    windows = sorted(windows_days)
    L = windows[-1]
    n_users = len(cutoff_ns)
    cut = np.asarray(cutoff_ns, dtype=np.int64)
    c_ev = cut[ev.user]
    lo_ev = c_ev - L * NS_PER_DAY
    keep = (ev.timestamp_ns >= lo_ev) & (ev.timestamp_ns < c_ev)
    u = ev.user[keep]
    ts = ev.timestamp_ns[keep]
    et = ev.event[keep]
    day = (ts - lo_ev[keep]) // NS_PER_DAY  # 0 .. L-1; in window w when day >= L - w (i.e. ts >= cutoff - w days)
    present = np.bincount(u, minlength=n_users) > 0

    price = ev.price[keep]
    purchase = et == _PURCHASE
    # coalesce(price, 0) * quantity over purchases; a null quantity makes a null term, which sum() skips
    rev_terms = np.where(purchase, money_units(np.nan_to_num(price, nan=0.0) * ev.quantity[keep]), 0.0)  # as the SQL: millionths
    rev_terms = np.nan_to_num(rev_terms, nan=0.0)
    type_slot = u * (N_TYPES + 1) + (et + 1)  # slot 0: event types outside EVENT_COUNTS

    day_key = np.unique(u * max(L, 1) + day)  # distinct (user, day) buckets
    day_user, day_day = np.divmod(day_key, max(L, 1))
    session_user, session_last = _last_day_per_key(u, ev.session[keep], day)

    def count(users: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(users, weights=weights, minlength=n_users).astype(np.float64)

    out = np.zeros((n_users, len(feature_columns(windows))), dtype=np.float64)
    col = 0
    by_type_L = None
    for w in windows:
        m = day >= L - w
        by_type = np.bincount(type_slot[m], minlength=n_users * (N_TYPES + 1)).reshape(n_users, N_TYPES + 1)[:, 1:]
        out[:, col : col + N_TYPES] = by_type
        out[:, col + N_TYPES] = count(session_user[session_last >= L - w])
        out[:, col + N_TYPES + 1] = count(day_user[day_day >= L - w])
        out[:, col + N_TYPES + 2] = count(u[m], rev_terms[m]) / MONEY_SCALE
        col += N_TYPES + 3
        by_type_L = by_type  # the largest window comes last
    sessions_L = out[:, col - 3]

    # recency, purchase recency, first seen: from the last / first event times before the cutoff
    last_ts = _group_extreme(u, ts, n_users, np.maximum, np.iinfo(np.int64).min)
    first_ts = _group_extreme(u, ts, n_users, np.minimum, np.iinfo(np.int64).max)
    last_purchase = _group_extreme(u[purchase], ts[purchase], n_users, np.maximum, np.iinfo(np.int64).min)
    has_purchase = np.bincount(u[purchase], minlength=n_users) > 0
    out[:, col] = (cut - last_ts).astype(np.float64) / NS_PER_DAY
    out[:, col + 1] = np.where(has_purchase, (cut - last_purchase).astype(np.float64) / NS_PER_DAY, float(L + 1))
    out[:, col + 2] = (cut - first_ts).astype(np.float64) / NS_PER_DAY
    out[:, col + 3] = count(*_distinct_users(u, ev.item[keep]))
    cat = ev.category[keep]
    has_cat = cat >= 0
    out[:, col + 4] = count(*_distinct_users(u[has_cat], cat[has_cat]))
    priced_view = (et == _VIEW) & ~np.isnan(price)
    n_priced = count(u[priced_view])
    price_sum = count(u[priced_view], money_units(price[priced_view])) / MONEY_SCALE
    out[:, col + 5] = np.divide(price_sum, n_priced, out=np.zeros(n_users), where=n_priced > 0)
    views, carts, purchases = by_type_L[:, _VIEW], by_type_L[:, _CART], by_type_L[:, _PURCHASE]
    out[:, col + 6] = carts / (views + 1)
    out[:, col + 7] = purchases / (views + 1)
    out[:, col + 8] = count(u) / np.maximum(sessions_L, 1)
    out[:, col + 9 : col + 9 + len(LIFETIME_COLUMNS)] = lifetime_from_arrays(
        ev.user, ev.timestamp_ns, ev.event == _PURCHASE, ev.event == _REMOVE, ev.item, ev.price, ev.quantity, cut, history_days, utc_offset_ns
    )
    out[~present] = 0.0
    return present, out


def _group_extreme(groups: np.ndarray, values: np.ndarray, n: int, ufunc, initial: int) -> np.ndarray:
    out = np.full(n, initial, dtype=np.int64)
    ufunc.at(out, groups, values)
    return out


def _distinct_users(users: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray]:
    """The user of each distinct (user, key) pair, for counting distinct keys per user with bincount."""
    if len(users) == 0:
        return (users,)
    span = int(keys.max()) + 1
    return (np.unique(users.astype(np.int64) * span + keys) // span,)


def _last_day_per_key(users: np.ndarray, keys: np.ndarray, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each distinct (user, key): its user and the last day it occurs on (a key is in a window when its
    last occurrence before the cutoff is)."""
    if len(users) == 0:
        return users, day
    span = int(keys.max()) + 1
    pair = users.astype(np.int64) * span + keys
    order = np.lexsort((day, pair))
    pair_sorted = pair[order]
    last = np.ones(len(pair_sorted), dtype=bool)
    last[:-1] = pair_sorted[1:] != pair_sorted[:-1]
    return pair_sorted[last] // span, day[order][last]


# ---- canonical frames -> arrays ----


def _codes(values: pd.Series) -> np.ndarray:
    """An integer code per distinct value, nulls sharing one code of their own."""
    return pd.factorize(values, use_na_sentinel=False)[0].astype(np.int64)


def _epoch_ns(values) -> np.ndarray:
    """UTC epoch ns truncated to microseconds toward zero, as DuckDB reads a pandas timestamp column."""
    ns = pd.to_datetime(values, utc=True).astype("datetime64[ns, UTC]")
    ns = np.asarray(ns.asi8 if isinstance(ns, pd.DatetimeIndex) else ns.array.asi8, dtype=np.int64)
    return np.sign(ns) * (np.abs(ns) // 1000) * 1000


def event_arrays(events: pd.DataFrame, user_codes: np.ndarray) -> EventArrays:
    """Arrays of a canonical events frame whose users are already coded (`user_codes`, one per row)."""
    etype, uniques = pd.factorize(events["event_type"].astype("string"), use_na_sentinel=True)
    to_index = np.array([EVENT_COUNTS.index(v) if v in EVENT_COUNTS else -1 for v in uniques] + [-1], dtype=np.int64)
    category = pd.factorize(events["category"], use_na_sentinel=True)[0].astype(np.int64)
    quantity = events["quantity"] if "quantity" in events.columns else pd.Series(1, index=events.index)
    session = events["session_id"] if "session_id" in events.columns else pd.Series(pd.NA, index=events.index, dtype="string")
    return EventArrays(
        user=user_codes,
        timestamp_ns=_epoch_ns(events["timestamp"]),
        event=to_index[etype],  # the null sentinel -1 picks the trailing -1
        session=_codes(session),
        item=_codes(events["item_id"]),
        category=category,
        price=pd.to_numeric(events["price"]).to_numpy(dtype=np.float64, na_value=np.nan),
        quantity=pd.to_numeric(quantity).to_numpy(dtype=np.float64, na_value=np.nan),
    )


def _cutoff_ns(cutoff) -> int:
    """Epoch ns of a cutoff at microsecond precision (floored, as a Python datetime holds it)."""
    ts = pd.Timestamp(cutoff)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return (ts.value // 1000) * 1000


def compute_user_features_fast(
    events: pd.DataFrame, cutoffs: Mapping | pd.Series, windows_days: list[int], history_days: int | None = None, utc_offset_ns: int = 0
) -> pd.DataFrame:
    """`feature_sql.compute_user_features` for one cutoff per user, in memory.

    `cutoffs` maps user_id -> cutoff (events of other users are ignored). Rows = (cutoff, user_id) for users
    with events in [cutoff - look-back, cutoff), sorted by cutoff then user_id; feature columns as float64.
    """
    cutoffs = pd.Series(cutoffs) if not isinstance(cutoffs, pd.Series) else cutoffs
    users = pd.Index(cutoffs.index.astype("string"))
    if users.has_duplicates:
        raise ValueError("compute_user_features_fast: one cutoff per user (duplicate user ids in `cutoffs`)")
    columns = feature_columns(windows_days)
    codes = users.get_indexer(events["user_id"].astype("string"))
    mine = codes >= 0
    cut_ns = np.array([_cutoff_ns(c) for c in cutoffs.to_numpy()], dtype=np.int64)
    present, matrix = features_from_arrays(
        event_arrays(events[mine], codes[mine].astype(np.int64)), cut_ns, windows_days, history_days, utc_offset_ns
    )
    frame = pd.DataFrame(matrix[present], columns=columns)
    frame.insert(0, "user_id", pd.array(users[present], dtype="string"))
    frame.insert(0, "cutoff", pd.to_datetime(cut_ns[present], utc=True).astype("datetime64[ns, UTC]"))
    return frame.sort_values(["cutoff", "user_id"], kind="stable", ignore_index=True)
