"""The prediction log: every append is on disk and read back once, windows, rotation, pseudonymisation."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from shopsight.config import Params
from shopsight.prediction_log import Prediction, PredictionLog, open_prediction_log, pseudonymise, read_prediction_log

T0 = datetime(2026, 3, 9, 10, 30, tzinfo=timezone.utc)


def _pred(uid: str, p: float = 0.5) -> Prediction:
    return Prediction(uid, {"views_7d": 3.0, "recency_days": 1.5}, {"probability": p}, as_of=T0)


def test_records_read_back_with_features_output_and_types(tmp_path):
    log = PredictionLog(tmp_path)
    assert log.append("predict_propensity", "propensity:v1", [_pred("a", 0.1), _pred("b", 0.9)], now=T0) == 2
    frame = read_prediction_log(tmp_path)
    assert list(frame["user_id"]) == ["a", "b"]
    assert frame.loc[1, "output"] == {"probability": 0.9}
    assert frame.loc[0, "features"] == {"views_7d": 3.0, "recency_days": 1.5}
    assert (frame["model"] == "propensity:v1").all() and (frame["endpoint"] == "predict_propensity").all()
    assert frame["timestamp"].dt.tz is not None and frame.loc[0, "as_of"] == pd.Timestamp(T0)


def test_window_is_half_open_and_files_rotate_by_hour(tmp_path):
    log = PredictionLog(tmp_path)
    for hours in range(4):
        log.append("predict_propensity", "m", [_pred(f"u{hours}")], now=T0 + timedelta(hours=hours))
    assert len(list(tmp_path.glob("predictions-*.jsonl"))) == 4
    frame = read_prediction_log(tmp_path, T0 + timedelta(hours=1), T0 + timedelta(hours=3))
    assert list(frame["user_id"]) == ["u1", "u2"]
    assert len(read_prediction_log(tmp_path, start=T0 + timedelta(hours=3))) == 1
    assert len(read_prediction_log(tmp_path, end="2026-03-09T10:30:00")) == 0  # naive bounds are UTC


def test_files_rotate_by_size_without_losing_records(tmp_path):
    log = PredictionLog(tmp_path, rotate_bytes=600)
    for i in range(20):
        log.append("predict_propensity", "m", [_pred(f"u{i}")], now=T0)
    log.close()
    assert len(list(tmp_path.glob("predictions-*.jsonl"))) > 3
    assert sorted(read_prediction_log(tmp_path)["user_id"]) == sorted(f"u{i}" for i in range(20))


def test_concurrent_appends_give_one_record_each(tmp_path):
    log = PredictionLog(tmp_path, rotate_bytes=4096)

    def worker(k: int) -> None:
        for i in range(50):
            log.append("predict_propensity", "m", [_pred(f"{k}-{i}")])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    frame = read_prediction_log(tmp_path)
    assert len(frame) == 400 and frame["user_id"].is_unique


def test_torn_last_line_is_skipped(tmp_path):
    log = PredictionLog(tmp_path)
    log.append("predict_propensity", "m", [_pred("a")], now=T0)
    path = next(tmp_path.glob("*.jsonl"))
    with open(path, "ab") as handle:
        handle.write(b'{"timestamp": "2026-03-09T10:31:00+00:00", "endpo')
    assert list(read_prediction_log(tmp_path)["user_id"]) == ["a"]


def test_missing_directory_gives_an_empty_frame_with_the_columns(tmp_path):
    frame = read_prediction_log(tmp_path / "nothing")
    assert frame.empty and {"timestamp", "endpoint", "model", "user_id", "features", "output"} <= set(frame.columns)


def test_salted_ids_match_ingest_pseudonymisation(tmp_path, monkeypatch):
    import duckdb

    expected = duckdb.sql("SELECT sha256('pepper' || 'user-1')[:16]").fetchall()[0][0]  # the expression in shopsight/ingest.py
    assert pseudonymise("user-1", "pepper") == expected
    monkeypatch.setenv("SHOPSIGHT_TEST_SALT", "pepper")
    params = Params.model_validate({"serving": {"prediction_log": {"dir": str(tmp_path), "pseudonymise_salt_env": "SHOPSIGHT_TEST_SALT"}}})
    log = open_prediction_log(params)
    log.append("predict_propensity", "m", [_pred("user-1")], now=T0)
    assert list(read_prediction_log(tmp_path)["user_id"]) == [expected]


def test_disabled_log_and_env_directory(tmp_path, monkeypatch):
    assert open_prediction_log(Params.model_validate({"serving": {"prediction_log": {"enabled": False}}})) is None
    monkeypatch.setenv("SHOPSIGHT_PREDICTION_LOG_DIR", str(tmp_path / "env"))
    assert open_prediction_log(Params()).directory == tmp_path / "env"


def test_unknown_key_in_params_is_rejected():
    with pytest.raises(ValueError):
        Params.model_validate({"serving": {"prediction_log": {"salt": "in-the-repo"}}})
