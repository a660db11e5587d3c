"""Sessionisation by an inactivity gap, shared by the service's request path and the test fixtures
(ingest applies the same rule in DuckDB, shopsight/ingest.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd

NS_PER_MINUTE = 60 * 1_000_000_000
_NAT = np.iinfo(np.int64).min


def session_numbers(user_codes: np.ndarray, timestamp_ns: np.ndarray, gap_minutes: int = 30) -> np.ndarray:
    """1-based session number of each event among its user's events: a new session starts after more than
    `gap_minutes` of inactivity. Events are taken in time order (stable for ties); a missing time (NaT, the
    int64 minimum) sorts last and never starts a session. Vectorised: one sort for all users."""
    n = len(user_codes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    ts = np.asarray(timestamp_ns, dtype=np.int64)
    missing = ts == _NAT
    order = np.lexsort((np.where(missing, np.iinfo(np.int64).max, ts), user_codes))
    user_sorted, ts_sorted, missing_sorted = user_codes[order], ts[order], missing[order]
    start = np.ones(n, dtype=bool)
    start[1:] = user_sorted[1:] != user_sorted[:-1]
    gap = np.zeros(n, dtype=bool)
    gap[1:] = (np.diff(ts_sorted) > gap_minutes * NS_PER_MINUTE) & ~missing_sorted[1:] & ~missing_sorted[:-1]
    total = np.cumsum(start | gap)
    # the running count restarts at each user's first event
    before_user = np.maximum.accumulate(np.where(start, total - 1, 0))
    numbers = np.empty(n, dtype=np.int64)
    numbers[order] = total - before_user
    return numbers


def assign_sessions(events: pd.DataFrame, gap_minutes: int = 30) -> pd.Series:
    """Return a session id per row: a user's new session starts after `gap_minutes` of inactivity.

    Rows that already carry a session_id keep it; derived ids are "<user_id>-s<n>". The frame need not be sorted.
    """
    user_codes = pd.factorize(events["user_id"], use_na_sentinel=False)[0]
    ts = events["timestamp"].to_numpy(dtype="datetime64[ns]").view(np.int64)
    counter = pd.Series(session_numbers(user_codes, ts, gap_minutes), index=events.index)
    derived = events["user_id"].astype("string") + "-s" + counter.astype("string")
    if "session_id" in events.columns:
        existing = events["session_id"].astype("string")
        return existing.where(existing.notna() & existing.ne(""), derived)
    return derived
