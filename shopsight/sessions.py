"""Sessionisation by an inactivity gap, shared by ingest and the service."""

from __future__ import annotations

import pandas as pd


def assign_sessions(events: pd.DataFrame, gap_minutes: int = 30) -> pd.Series:
    """Return a session id per row: a user's new session starts after `gap_minutes` of inactivity.

    Rows that already carry a session_id keep it. The frame need not be sorted.
    """
    order = events.sort_values(["user_id", "timestamp"], kind="stable").index
    ev = events.loc[order, ["user_id", "timestamp"]]
    user = ev["user_id"].astype(object)
    new_user = user.ne(user.shift()).to_numpy(dtype=bool)
    gap = (ev["timestamp"].diff() > pd.Timedelta(minutes=gap_minutes)).to_numpy(dtype=bool)
    counter = pd.Series((new_user | gap).astype("int64"), index=ev.index).groupby(user.to_numpy()).cumsum()
    derived = ev["user_id"].astype("string") + "-s" + counter.astype("string")
    derived = derived.reindex(events.index)
    if "session_id" in events.columns:
        existing = events["session_id"].astype("string")
        return existing.where(existing.notna() & existing.ne(""), derived)
    return derived
