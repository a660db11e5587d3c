"""Append-only log of served predictions (JSON Lines, rotated by hour and size) and its reader for monitoring.

One record per prediction: `timestamp` (UTC, when it was answered), `endpoint`, `model` (the model tag),
`user_id` (opaque; salted-hash pseudonymised when a salt is configured), `as_of` (the cutoff the features
were computed at, when the endpoint has one), `features` (the model's input, name -> value) and `output`
(what the endpoint answered for that user, e.g. {"probability": 0.42}).

Files are `<dir>/predictions-<YYYYMMDDTHH>-<host>-<pid>-<seq>.jsonl`: one writer per process (so service
workers never interleave lines), a new file each UTC hour and whenever a file passes `rotate_bytes`.
`append` writes and flushes before it returns, so every answered request is in the file even when the
service is stopped right after; an OS crash can at most leave a torn last line, which the reader skips.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import orjson
import pandas as pd

log = logging.getLogger(__name__)

FILE_PATTERN = re.compile(r"^predictions-(\d{8}T\d{2})-.+\.jsonl$")
COLUMNS = ["timestamp", "endpoint", "model", "user_id", "as_of", "features", "output"]


def pseudonymise(user_id: str, salt: str) -> str:
    """The salted hash ingest uses for user ids (`sha256(salt || user_id)[:16]` in shopsight/ingest.py), so
    logged ids join the pseudonymised events; the id itself when there is no salt."""
    if not salt:
        return user_id
    return hashlib.sha256((salt + user_id).encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Prediction:
    """One prediction as the service answered it."""

    user_id: str | None
    features: Mapping[str, float] | None
    output: Mapping[str, Any]
    as_of: datetime | None = None


class PredictionLog:
    """Thread-safe appender of prediction records for one process."""

    def __init__(self, directory: str | Path, rotate_bytes: int = 64 * 2**20, salt: str = "") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rotate_bytes = rotate_bytes
        self._salt = salt
        self._lock = threading.Lock()
        self._stem = f"{socket.gethostname().replace('-', '_')}-{os.getpid()}"
        self._hour: str | None = None
        self._seq = 0
        self._file = None
        self._size = 0
        self.records_written = 0

    def append(self, endpoint: str, model: str, predictions: Iterable[Prediction], now: datetime | None = None) -> int:
        """Write one line per prediction and flush; returns the number written."""
        now = now or datetime.now(timezone.utc)
        stamp = now.isoformat()
        lines = []
        for p in predictions:
            record = {
                "timestamp": stamp,
                "endpoint": endpoint,
                "model": model,
                "user_id": None if p.user_id is None else pseudonymise(p.user_id, self._salt),
                "as_of": None if p.as_of is None else p.as_of.isoformat(),
                "features": p.features,
                "output": p.output,
            }
            lines.append(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE))
        if not lines:
            return 0
        data = b"".join(lines)
        with self._lock:
            handle = self._handle(now, len(data))
            handle.write(data)
            handle.flush()  # in the OS before the response leaves: a stopped service loses nothing it answered
            self._size += len(data)
            self.records_written += len(lines)
        return len(lines)

    def _handle(self, now: datetime, incoming: int):
        hour = now.astimezone(timezone.utc).strftime("%Y%m%dT%H")
        if self._file is None or hour != self._hour or (self._size and self._size + incoming > self.rotate_bytes):
            self._close()
            self._seq = self._seq + 1 if hour == self._hour else 0
            self._hour = hour
            path = self.directory / f"predictions-{hour}-{self._stem}-{self._seq:04d}.jsonl"
            self._file = open(path, "ab", buffering=0)  # unbuffered: each append is one write() to the OS
            self._size = path.stat().st_size
        return self._file

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        with self._lock:
            self._close()


def open_prediction_log(params, directory: str | Path | None = None) -> PredictionLog | None:
    """The service's log from `serving.prediction_log` params (None when disabled). The directory is
    $SHOPSIGHT_PREDICTION_LOG_DIR, else `directory`, else the params' `dir`; the salt is read from the
    environment variable the params name (ingest's salt variable when none is named)."""
    cfg = params.serving.prediction_log
    if not cfg.enabled:
        return None
    salt_env = cfg.pseudonymise_salt_env or params.ingest.pseudonymise_salt_env
    salt = os.environ.get(salt_env, "") if salt_env else ""
    if salt_env and not salt:
        log.warning("prediction log: $%s is empty, user ids are logged as given", salt_env)
    target = os.environ.get("SHOPSIGHT_PREDICTION_LOG_DIR") or directory or cfg.dir
    return PredictionLog(target, rotate_bytes=cfg.rotate_mb * 2**20, salt=salt)


def _hour_of(path: Path) -> pd.Timestamp | None:
    match = FILE_PATTERN.match(path.name)
    return pd.Timestamp(datetime.strptime(match.group(1), "%Y%m%dT%H"), tz="UTC") if match else None


def _as_utc(value: Any) -> pd.Timestamp | None:
    if value is None:
        return None
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def read_prediction_log(directory: str | Path, start: Any = None, end: Any = None, endpoint: str | None = None) -> pd.DataFrame:
    """Logged predictions with start <= timestamp < end (UTC; None = unbounded), oldest first.

    Columns: timestamp (datetime64 UTC), endpoint, model, user_id, as_of (datetime64 UTC, NaT when the
    endpoint has none), features (dict name -> value, or None) and output (dict). Files outside the window
    are not opened; a torn last line (a crash mid-write) is skipped with a warning. An absent or empty
    directory gives an empty frame with these columns.
    """
    start, end = _as_utc(start), _as_utc(end)
    directory = Path(directory)
    records: list[dict] = []
    files = sorted(directory.glob("predictions-*.jsonl")) if directory.exists() else []
    for path in files:
        hour = _hour_of(path)
        if hour is not None and ((end is not None and hour >= end) or (start is not None and hour + pd.Timedelta(hours=1) <= start)):
            continue
        with open(path, "rb") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    records.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    log.warning("%s:%d: unreadable prediction record skipped (torn write?)", path, number)
    frame = pd.DataFrame.from_records(records, columns=COLUMNS) if records else pd.DataFrame({c: pd.Series(dtype="object") for c in COLUMNS})
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    frame["as_of"] = pd.to_datetime(frame["as_of"], utc=True, format="ISO8601")
    for col in ("endpoint", "model", "user_id"):
        frame[col] = frame[col].astype("string")
    keep = np.ones(len(frame), dtype=bool)
    if start is not None:
        keep &= (frame["timestamp"] >= start).to_numpy()
    if end is not None:
        keep &= (frame["timestamp"] < end).to_numpy()
    if endpoint is not None:
        keep &= (frame["endpoint"] == endpoint).fillna(False).to_numpy()
    return frame[keep].sort_values("timestamp", kind="stable").reset_index(drop=True)
