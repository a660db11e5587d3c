"""monitoring/weekly.py: which week a report covers when none is given."""

from __future__ import annotations

import pandas as pd
import pytest

from monitoring.weekly import default_week_end, event_time_range


def _events_file(path, first: str, last: str):
    ts = pd.to_datetime([first, last], utc=True, format="ISO8601")
    pd.DataFrame({"user_id": ["u", "u"], "timestamp": ts}).to_parquet(path)
    return path


@pytest.mark.parametrize("last, expected", [
    ("2026-03-29 23:00", "2026-03-30"),  # Sunday evening: the week Mon 23 - Sun 29 is complete
    ("2026-03-30 05:00", "2026-03-30"),  # Monday morning: same week; the new one has barely started
    ("2026-03-28 12:00", "2026-03-23"),  # Saturday: that week is not complete, the one before is
])
def test_historical_data_reports_its_own_last_complete_week(tmp_path, last, expected):
    path = _events_file(tmp_path / "events.parquet", "2026-01-05", last)
    assert default_week_end(path, now="2026-11-30 11:00") == pd.Timestamp(expected, tz="UTC")


def test_current_data_reports_the_calendar_week_that_ended(tmp_path):
    path = _events_file(tmp_path / "events.parquet", "2026-01-05", "2026-11-30 10:59")
    assert default_week_end(path, now="2026-12-02 09:00") == pd.Timestamp("2026-11-30", tz="UTC")


def test_event_time_range_reads_both_ends(tmp_path):
    path = _events_file(tmp_path / "events.parquet", "2026-01-05 08:00", "2026-03-28 12:00")
    assert event_time_range(path) == (pd.Timestamp("2026-01-05 08:00", tz="UTC"), pd.Timestamp("2026-03-28 12:00", tz="UTC"))
