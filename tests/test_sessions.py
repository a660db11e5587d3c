"""Sessionisation by an inactivity gap (shopsight/sessions.py)."""

import numpy as np
import pandas as pd

from shopsight.sessions import assign_sessions, session_numbers

MIN = 60 * 10**9
NAT = np.iinfo(np.int64).min


def test_a_gap_longer_than_the_limit_starts_a_session_exactly_at_the_boundary():
    users = np.zeros(4, dtype=np.int64)
    ts = np.array([0, 30 * MIN, 60 * MIN + 1000, 60 * MIN + 2000])  # 30 min: same session; 30 min + 1 us: new
    assert session_numbers(users, ts, 30).tolist() == [1, 1, 2, 2]


def test_numbers_restart_per_user_and_follow_time_not_row_order():
    users = np.array([1, 0, 1, 0, 1])
    ts = np.array([120 * MIN, 0, 0, 5 * MIN, 1 * MIN])
    assert session_numbers(users, ts, 30).tolist() == [2, 1, 1, 1, 1]


def test_missing_time_joins_the_last_session():
    assert session_numbers(np.zeros(3, dtype=np.int64), np.array([NAT, 0, 100 * MIN]), 30).tolist() == [2, 1, 2]


def test_assign_sessions_keeps_given_ids_and_names_derived_ones_after_the_user():
    frame = pd.DataFrame(
        {
            "user_id": pd.array(["b", "a", "b", "a"], dtype="string"),
            "timestamp": pd.to_datetime(["2026-01-01 10:00", "2026-01-01 10:00", "2026-01-01 12:00", "2026-01-01 10:10"], utc=True),
            "session_id": pd.array([None, "web-1", "", None], dtype="string"),
        },
        index=[7, 3, 5, 9],
    )
    out = assign_sessions(frame)
    assert out.to_dict() == {7: "b-s1", 3: "web-1", 5: "b-s2", 9: "a-s1"}
