"""Ingest end to end on small files in real formats: contract errors, rejects with reasons, dedup, sessions."""

import json

import pandas as pd
import pytest

from shopsight.config import Params
from shopsight.ingest import ingest, load_events
from shopsight.sources import SourceError

HEADER = "uid,sku,action,ts,price\n"


def _params(path, **options):
    return Params.model_validate(
        {
            "data": {
                "source": "generic",
                "path": str(path),
                "options": {"columns": {"user_id": "uid", "item_id": "sku", "event_type": "action", "timestamp": "ts"}, **options},
            }
        }
    )


def test_bad_rows_go_to_rejects_with_reasons_and_are_counted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv = tmp_path / "clicks.csv"
    csv.write_text(
        HEADER
        + "u1,a,view,2026-01-05T10:00:00Z,3.5\n"
        + "u1,a,view,2026-01-05T10:00:00Z,3.5\n"  # exact duplicate: removed and counted
        + "u1,b,purchase,2026-01-05T10:10:00Z,9\n"
        + "u1,c,view,2026-01-05T12:00:00Z,1\n"  # > 30 minutes later: a new session
        + "u2,a,teleport,2026-01-05T10:00:00Z,3.5\n"  # unknown event type
        + "u2,a,view,not-a-time,3.5\n"  # bad timestamp
        + "u3,a,view,2026-01-06T10:00:00Z,-2\n"  # negative price
        + ",a,view,2026-01-06T10:00:00Z,1\n"  # missing user
    )
    report = ingest(_params(csv))
    assert (report.rows_in, report.rows_out, report.rejected, report.duplicates_removed) == (8, 3, 4, 1)
    assert report.rows_in == report.rows_out + report.rejected + report.duplicates_removed
    assert report.rejects_by_reason == {
        "unknown event_type (expected one of view, cart, remove_from_cart, favorite, purchase)": 1,
        "unparseable timestamp (expected ISO 8601)": 1,
        "negative price": 1,
        "missing user_id": 1,
    }
    rejects = pd.read_parquet("data/rejects.parquet")
    assert sorted(rejects["raw_line"].astype(int)) == [6, 7, 8, 9], "rejects point at the source lines"
    assert json.loads(open("metrics/ingest.json").read())["rejected"] == 4

    events = load_events()
    assert str(events["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert events["event_type"].tolist() == ["view", "purchase", "view"]
    sessions = events.set_index("item_id")["session_id"]
    assert sessions["a"] == sessions["b"] != sessions["c"], "sessions derived by the 30-minute gap"


def test_missing_required_column_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv = tmp_path / "clicks.csv"
    csv.write_text("uid,sku,ts\nu1,a,2026-01-05T10:00:00Z\n")
    with pytest.raises(SourceError) as err:
        ingest(_params(csv))
    assert "clicks.csv" in str(err.value) and "action" in str(err.value)


def test_failed_ingest_keeps_previous_events(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = tmp_path / "good.csv"
    good.write_text(HEADER + "u1,a,view,2026-01-05T10:00:00Z,3.5\n")
    ingest(_params(good))
    before = (tmp_path / "data/events.parquet").read_bytes()
    with pytest.raises(SourceError):
        ingest(_params(tmp_path / "absent.csv"))
    assert (tmp_path / "data/events.parquet").read_bytes() == before


def test_salted_pseudonymisation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SHOPSIGHT_TEST_SALT", "pepper")
    csv = tmp_path / "clicks.csv"
    csv.write_text(HEADER + "alice@example.com,a,view,2026-01-05T10:00:00Z,3.5\n")
    params = _params(csv)
    params.ingest.pseudonymise_salt_env = "SHOPSIGHT_TEST_SALT"
    ingest(params)
    uid = load_events()["user_id"].iloc[0]
    assert "alice" not in uid and len(uid) == 16


def test_ingest_out_of_duckdb_memory_is_a_clear_error_and_keeps_previous_events(tmp_path, monkeypatch):
    """DuckDB's dedup and sort run under ingest.memory_gb: when that is too small for the file, the error names the
    setting, the previous events stay, and no staging or partial file is left behind."""
    from shopsight.ingest import IngestError, finalise_memory_gb

    monkeypatch.chdir(tmp_path)
    good = tmp_path / "good.csv"
    good.write_text(HEADER + "u1,a,view,2026-01-05T10:00:00Z,3.5\n")
    ingest(_params(good))
    before = (tmp_path / "data/events.parquet").read_bytes()
    big = tmp_path / "big.csv"
    big.write_text(HEADER + "".join(f"u{i % 997},item-{i},view,2026-01-{1 + i % 28:02d}T10:{i % 60:02d}:00Z,{i % 50}.5\n" for i in range(60_000)))
    params = _params(big)
    params.ingest.memory_gb = 0.0005  # half a megabyte
    assert finalise_memory_gb(params) == 0.0005 and 1 <= finalise_memory_gb(_params(big)) <= 8
    with pytest.raises(IngestError, match=r"ran out of its 0\.00 GB.*60,000 valid rows.*ingest\.memory_gb"):
        ingest(params)
    assert (tmp_path / "data/events.parquet").read_bytes() == before
    left = sorted(str(p.relative_to(tmp_path / "data")) for p in (tmp_path / "data").rglob("*") if p.is_file())
    assert left == ["events.parquet", "rejects.parquet", "truth/NO_GROUND_TRUTH.json"], left


def test_finalising_in_time_ranges_gives_the_one_pass_events(tmp_path, monkeypatch):
    """More staged rows than DuckDB's memory holds are deduplicated and sorted one time range at a time: the events
    (pseudonymised, duplicates across the whole file removed, in time order) and the counts equal the one-pass run's."""
    import shopsight.ingest as ingest_module

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SHOPSIGHT_TEST_SALT", "pepper")
    csv = tmp_path / "clicks.csv"
    rows = [f"u{i % 37},item-{i % 101},view,2026-01-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:{i % 7:02d}Z,{i % 50}.5,s{i % 37}-{i % 28}\n" for i in range(3_000)]
    csv.write_text("uid,sku,action,ts,price,session\n" + "".join(rows + rows[::3]))  # every third row twice, far apart in the file
    params = _params(csv, columns={"user_id": "uid", "item_id": "sku", "event_type": "action", "timestamp": "ts", "session_id": "session"})
    params.ingest.pseudonymise_salt_env = "SHOPSIGHT_TEST_SALT"
    one = ingest(params)
    one_pass = pd.read_parquet("data/events.parquet")
    split = []
    original = ingest_module._finalise_by_time
    monkeypatch.setattr(ingest_module, "_finalise_by_time", lambda *a, **k: split.append((len(k["bounds"]) + 1, k["pushdown"])) or original(*a, **k))
    monkeypatch.setattr(ingest_module, "FINALISE_BYTES_PER_ROW", 2**30)  # a GiB a row: as many passes as allowed
    ranged = ingest(params)
    # the rows are not in time order (every range would read them all): written out per range first
    assert split == [(ingest_module.FINALISE_MAX_PASSES, False)]
    by_time = pd.read_parquet("data/events.parquet")
    assert (ranged.rows_out, ranged.duplicates_removed, ranged.users) == (one.rows_out, one.duplicates_removed, one.users) == (3_000, 1_000, 37)
    pd.testing.assert_frame_equal(by_time, one_pass)
    assert by_time["timestamp"].is_monotonic_increasing and not by_time["user_id"].str.startswith("u").any()
    assert not (tmp_path / "data/staging/time_ranges").exists()


def test_events_come_out_in_one_total_order_with_the_funnel_first_and_duplicates_dropped_across_batches(tmp_path, monkeypatch):
    """Events of one user at one instant come out in funnel order (view, cart, purchase), then by the rest of the row,
    whatever order the file had them in: the same file in two row orders gives the same events file. Exact duplicates
    are dropped where they meet across the sorted pass's batches too (two rows a batch here)."""
    import shopsight.ingest as ingest_module

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ingest_module, "FINALISE_BATCH_ROWS", 2)
    rows = ["u1,a,purchase,2026-01-05T10:00:00Z,3.5,s1\n", "u1,a,view,2026-01-05T10:00:00Z,3.5,s1\n",
            "u1,a,cart,2026-01-05T10:00:00Z,3.5,s1\n", "u1,a,view,2026-01-05T10:00:00Z,3.5,s1\n",
            "u1,a,view,2026-01-05T10:00:00Z,3.5,s1\n", "u1,b,view,2026-01-05T10:00:00Z,,s1\n",
            "u1,b,view,2026-01-05T10:00:00Z,,s1\n", "u0,z,view,2026-01-05T10:00:00Z,1,s0\n",
            "u1,a,view,2026-01-05T09:00:00Z,3.5,s1\n"]
    outputs = []
    for order in (rows, rows[::-1]):
        csv = tmp_path / "clicks.csv"
        csv.write_text("uid,sku,action,ts,price,session\n" + "".join(order))
        report = ingest(_params(csv, columns={"user_id": "uid", "item_id": "sku", "event_type": "action", "timestamp": "ts",
                                              "session_id": "session"}))
        assert (report.rows_out, report.duplicates_removed) == (6, 3)
        outputs.append(pd.read_parquet("data/events.parquet"))
    events = outputs[0]
    assert list(zip(events["user_id"], events["item_id"], events["event_type"].astype(str))) == [
        ("u1", "a", "view"), ("u0", "z", "view"), ("u1", "a", "view"), ("u1", "a", "cart"), ("u1", "a", "purchase"), ("u1", "b", "view")]
    pd.testing.assert_frame_equal(outputs[1], events)


def test_without_repeats_compares_every_column_and_takes_nulls_as_equal():
    import pyarrow as pa

    from shopsight.ingest import _without_repeats

    table = pa.table({"a": [1, 1, 1, 2, 2], "b": [None, None, "x", "x", "x"]})
    assert _without_repeats(table, None).to_pydict() == {"a": [1, 1, 2], "b": [None, "x", "x"]}
    assert _without_repeats(table, table.slice(4)).to_pydict() == {"a": [1, 1, 2], "b": [None, "x", "x"]}
    assert _without_repeats(table.slice(3), table.slice(4)).num_rows == 0  # both equal the last row written
    assert _without_repeats(table.slice(0, 0), table.slice(4)).num_rows == 0


def test_time_ordered_staging_is_finalised_range_by_range_straight_from_the_staged_rows(tmp_path, monkeypatch):
    """A file in time order (as most exports are) is finalised in ranges of FINALISE_RANGE_ROWS read straight from the
    staging file, whose row groups each span a short time: the same events as one pass, duplicates across chunks
    removed; the same rows out of time order would be read by every range, so they take one pass."""
    import shopsight.ingest as ingest_module

    monkeypatch.chdir(tmp_path)
    rows = [f"u{i % 37},item-{i % 101},view,2026-01-{1 + i // 150:02d}T{i % 150 // 10:02d}:{i % 10:02d}:00Z,{i % 50}.5,s{i % 37}-{i // 150}\n"
            for i in range(3_000)]
    doubled = [row for i, row in enumerate(rows) for row in ([row, row] if i % 3 == 0 else [row])]  # duplicates next to each other
    ordered, shuffled = tmp_path / "ordered.csv", tmp_path / "shuffled.csv"
    header = "uid,sku,action,ts,price,session\n"  # sessions given: none to derive (that needs whole user histories)
    ordered.write_text(header + "".join(doubled))
    shuffled.write_text(header + "".join(doubled[j * 7919 % len(doubled)] for j in range(len(doubled))))  # a permutation
    plans = []
    original = ingest_module._finalise_by_time
    monkeypatch.setattr(ingest_module, "_finalise_by_time", lambda *a, **k: plans.append((len(k["bounds"]) + 1, k["pushdown"])) or original(*a, **k))

    def run(path, range_rows):
        monkeypatch.setattr(ingest_module, "FINALISE_RANGE_ROWS", range_rows)
        params = _params(path, columns={"user_id": "uid", "item_id": "sku", "event_type": "action", "timestamp": "ts", "session_id": "session"})
        params.data.chunksize = 700  # 4,000 rows: five chunks staged, the last held in memory
        report = ingest(params)
        return report, pd.read_parquet("data/events.parquet")

    monkeypatch.setattr(ingest_module, "STAGING_ROW_GROUP", 100)
    one, one_pass = run(ordered, 10**9)
    assert plans == [(1, True)]  # one range: every staged row
    ranged, by_range = run(ordered, 1_000)
    assert plans == [(1, True), (4, True)]
    assert (ranged.rows_out, ranged.duplicates_removed) == (one.rows_out, one.duplicates_removed) == (3_000, 1_000)
    pd.testing.assert_frame_equal(by_range, one_pass)
    assert by_range["timestamp"].is_monotonic_increasing
    _, from_shuffled = run(shuffled, 1_000)
    assert plans == [(1, True), (4, True), (1, True)]  # out of time order, within DuckDB's memory: one pass
    pd.testing.assert_frame_equal(from_shuffled, one_pass)
