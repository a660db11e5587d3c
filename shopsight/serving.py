"""Request -> features -> model input for the service, with the same feature code as training."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shopsight.config import FeatureParams
from shopsight.feature_fast import EventArrays, features_from_arrays
from shopsight.feature_sql import EVENT_COUNTS
from shopsight.features import feature_columns, model_input, model_input_values
from shopsight.schema import EVENT_TYPES
from shopsight.sessions import assign_sessions, session_numbers

EventType = Literal["view", "cart", "remove_from_cart", "favorite", "purchase"]
assert set(EventType.__args__) == set(EVENT_TYPES)  # type: ignore[attr-defined]

MAX_ID_LENGTH = 128
MAX_EVENTS_PER_USER = 2000
# Timestamps the feature code can represent (pandas nanoseconds end in 2262): anything else is a 400, not a 500.
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2200, 1, 1, tzinfo=timezone.utc)
ONE_MICROSECOND = timedelta(microseconds=1)
EVENT_INDEX = {e: i for i, e in enumerate(EVENT_COUNTS)}


def _in_range(value: datetime) -> datetime:
    try:
        value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    except OverflowError:  # e.g. 0001-01-01T00:00+00:04 has no UTC datetime
        raise ValueError(f"{value.isoformat()} is outside {EARLIEST.year}..{LATEST.year - 1}") from None
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"{value.isoformat()} is outside {EARLIEST.year}..{LATEST.year - 1}")
    return value


class EventIn(BaseModel):
    """One shopper event as the service receives it."""

    model_config = ConfigDict(extra="forbid")
    item_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    event_type: EventType
    timestamp: datetime = Field(description="ISO 8601; a timestamp without an offset is taken as UTC")
    price: float | None = Field(None, ge=0, le=1e9, allow_inf_nan=False)
    category: str | None = Field(None, max_length=MAX_ID_LENGTH)
    session_id: str | None = Field(None, max_length=MAX_ID_LENGTH)
    quantity: int = Field(1, ge=1, le=100_000)

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _in_range(value)


class UserHistory(BaseModel):
    """A user's recent events; features are computed as of `as_of` (default: now) from events before it."""

    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    events: list[EventIn] = Field(default_factory=list, max_length=MAX_EVENTS_PER_USER)
    as_of: datetime | None = None

    @field_validator("as_of")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _in_range(value)


class PropensityOut(BaseModel):
    user_id: str
    probability: float = Field(description="the model's raw output (uncalibrated; ranks users, as before)")
    calibrated_probability: float | None = Field(
        None, description="the probability calibrated on the validation cutoff (calibration.json), as /explain_propensity and audiences give it"
    )
    model: str
    as_of: datetime
    recent_activity: bool = Field(description="false when the user had no events in the look-back window")


def histories_to_events(users: list[UserHistory], gap_minutes: int = 30) -> pd.DataFrame:
    """Canonical events frame from request histories (sessions derived where not given)."""
    # Rows are keyed by the position of the history, so two histories of one user never mix.
    rows = [
        (str(i), e.item_id, e.event_type, e.timestamp, e.session_id, e.category, e.price, e.quantity)
        for i, u in enumerate(users)
        for e in u.events
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp", "session_id", "category", "price", "quantity"])
    frame["user_id"] = frame["user_id"].astype("string")
    frame["item_id"] = frame["item_id"].astype("string")
    frame["event_type"] = pd.Categorical(frame["event_type"], categories=list(EVENT_TYPES))
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).astype("datetime64[ns, UTC]")
    frame["category"] = frame["category"].astype("string")
    frame["price"] = frame["price"].astype("float64")
    frame["quantity"] = frame["quantity"].astype("int64")
    frame["session_id"] = frame["session_id"].astype("string")
    if len(frame):
        frame["session_id"] = assign_sessions(frame, gap_minutes)
    return frame


def features_for_histories(users: list[UserHistory], params: FeatureParams, now: datetime | None = None) -> tuple[np.ndarray, list[bool], list[datetime]]:
    """Model input rows (in request order), whether each user had recent activity, and the as_of used.

    The values equal the batch features (`feature_sql.compute_user_features` over `histories_to_events`) at
    each history's own as_of, computed in memory (shopsight/feature_fast.py): a DuckDB query costs tens of
    milliseconds even for one user, this well under one (bench/bench_serving.py --features).
    """
    now = now or datetime.now(timezone.utc)
    as_ofs = [u.as_of or now for u in users]
    cutoff_ns = np.fromiter(((t - EARLIEST) // ONE_MICROSECOND for t in as_ofs), dtype=np.int64, count=len(as_ofs)) * 1000
    present, matrix = features_from_arrays(request_event_arrays(users), cutoff_ns, params.windows_days)
    rows = np.repeat(_idle_features(params)[None, :], len(users), axis=0)
    if present.any():
        rows[present] = model_input_values(matrix[present])  # the matrix is in feature_columns order
    return rows, present.tolist(), as_ofs


def request_event_arrays(users: list[UserHistory], gap_minutes: int = 30) -> EventArrays:
    """The events of request histories as coded arrays, user = position of the history (as in
    `histories_to_events`), sessions derived where not given, with the same ids that function gives."""
    events = [e for u in users for e in u.events]
    n = len(events)
    user = np.repeat(np.arange(len(users), dtype=np.int64), [len(u.events) for u in users])
    # validated timestamps are timezone-aware UTC datetimes: exact integer microseconds, no float rounding
    ts_ns = np.fromiter(((e.timestamp - EARLIEST) // ONE_MICROSECOND for e in events), dtype=np.int64, count=n) * 1000
    numbers = session_numbers(user, ts_ns, gap_minutes)
    given = [e.session_id for e in events]
    if any(given):  # spell derived ids like assign_sessions so a given id equal to one is the same session
        keys = [g if g else f"{u}-s{k}" for g, u, k in zip(given, user.tolist(), numbers.tolist())]
        session = pd.factorize(np.array(keys, dtype=object))[0].astype(np.int64)
    else:
        session = numbers  # distinct sessions are counted per user: the per-user number is the id
    return EventArrays(
        user=user,
        timestamp_ns=ts_ns,
        event=np.fromiter((EVENT_INDEX[e.event_type] for e in events), dtype=np.int64, count=n),
        session=session,
        item=pd.factorize(np.array([e.item_id for e in events], dtype=object))[0].astype(np.int64),
        category=pd.factorize(np.array([e.category for e in events], dtype=object))[0].astype(np.int64),
        price=np.array([e.price for e in events], dtype=np.float64).reshape(n),  # None -> NaN
        quantity=np.fromiter((e.quantity for e in events), dtype=np.float64, count=n),
    )


def _idle_features(params: FeatureParams) -> np.ndarray:
    """Features of a user with no events in the look-back window (outside the training population)."""
    return _idle_row(tuple(params.windows_days)).copy()


@lru_cache(maxsize=8)
def _idle_row(windows_days: tuple[int, ...]) -> np.ndarray:
    params = FeatureParams(windows_days=list(windows_days))
    columns = feature_columns(params.windows_days)
    values = pd.DataFrame([{c: 0.0 for c in columns}])
    values["recency_days"] = float(params.lookback_days)
    values["purchase_recency_days"] = float(params.lookback_days + 1)
    return model_input(values, columns)[0]
