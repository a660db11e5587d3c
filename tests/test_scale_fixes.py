"""Behaviour kept by the scale fixes (bench/bench_scale.py): the same values from the bounded-memory paths."""

from __future__ import annotations

import numpy as np
import pandas as pd

from shopsight.churn import RFM_COLUMNS, activity_rfm, activity_rfm_at_cutoffs


def _events(n: int = 4000, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-01-05", tz="UTC").value
    ts = start + rng.integers(0, 60 * 86_400 * 10**9, n)
    return pd.DataFrame({
        "user_id": pd.array([f"u{k:03d}" for k in rng.integers(0, 150, n)], dtype="string"),
        "timestamp": pd.to_datetime(np.sort(ts), utc=True),
    })


def test_activity_rfm_from_parquet_equals_the_in_memory_reference(tmp_path):
    events = _events()
    path = tmp_path / "events.parquet"
    events.to_parquet(path, index=False)
    # midnights and instants inside a day (a cutoff at a non-UTC midnight): events of the cutoff's day before it count
    cutoffs = [pd.Timestamp("2026-01-20", tz="UTC"), pd.Timestamp("2026-02-03 16:00", tz="UTC"), pd.Timestamp("2026-03-01", tz="UTC")]
    got = activity_rfm_at_cutoffs(path, cutoffs, time_unit_days=7.0)
    for cutoff in cutoffs:
        want = activity_rfm(events, cutoff, 7.0).reset_index()
        want["user_id"] = want["user_id"].astype("string")
        part = got[got["cutoff"] == cutoff].drop(columns="cutoff").sort_values("user_id").reset_index(drop=True)
        assert len(part) == events.loc[events["timestamp"] < cutoff, "user_id"].nunique()
        pd.testing.assert_frame_equal(part[["user_id", *RFM_COLUMNS]], want[["user_id", *RFM_COLUMNS]], check_exact=True)
    assert str(got["cutoff"].dtype) == "datetime64[ns, UTC]"
    # a later cutoff sees more history: frequency never falls for a user
    wide = got.pivot(index="user_id", columns="cutoff", values=RFM_COLUMNS[0]).dropna()
    assert (wide.diff(axis=1).iloc[:, 1:] >= 0).all().all()


def test_sequence_events_equal_a_pandas_read_and_stable_sort(tmp_path):
    from shopsight.sequences import load_sequence_events

    rng = np.random.default_rng(5)
    n = 3000
    users = np.array(["u10", "u2", "Ü1", "u1", "a9", "éa"], dtype=object)
    ts = pd.Timestamp("2026-01-05", tz="UTC").value + rng.integers(0, 40, n) * 10**9  # many ties within a user
    session = pd.array([f"s{k}" for k in rng.integers(0, 50, n)], dtype="string")
    session[rng.random(n) < 0.1] = pd.NA  # missing session ids stay missing
    frame = pd.DataFrame({
        "user_id": pd.array(users[rng.integers(0, len(users), n)].astype(str), dtype="string"),
        "item_id": pd.array([f"i{k}" for k in rng.integers(0, 30, n)], dtype="string"),
        "event_type": rng.choice(["view", "cart", "purchase", "remove_from_cart"], n),
        "timestamp": pd.to_datetime(ts, utc=True),
        "session_id": session,
        "price": rng.random(n),
    })
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = ["view", "cart", "purchase"]
    plain = pa.Table.from_pandas(frame, preserve_index=False)
    # as ingest writes them (no pandas metadata: object ids) and as pandas writes them ("string" ids)
    for name, table in (("canonical", plain.replace_schema_metadata(None)), ("pandas", plain)):
        path = tmp_path / f"{name}.parquet"
        pq.write_table(table, path, row_group_size=700)  # several row groups: chunked columns
        want = pd.read_parquet(path, columns=["user_id", "item_id", "event_type", "timestamp", "session_id"],
                               filters=[("event_type", "in", types)])
        want["event_type"] = want["event_type"].astype(str)
        want = want.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
        got = load_sequence_events(path, types)
        sessions = want.pop("session_id")
        pd.testing.assert_frame_equal(got.drop(columns="session"), want, check_exact=True)
        # sessions as codes: equal codes exactly for equal ids, -1 exactly where the id is missing
        codes = got["session"].to_numpy()
        assert np.array_equal(codes == -1, sessions.isna().to_numpy()) and (codes == -1).any()
        pairs = pd.DataFrame({"code": codes, "id": sessions.astype(object)})[codes >= 0].drop_duplicates()
        assert pairs["code"].is_unique and pairs["id"].is_unique
