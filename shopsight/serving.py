"""Request -> features -> model input for the service, with the same feature code as training."""

from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shopsight.config import FeatureParams
from shopsight.features import build_user_features, feature_columns, model_input
from shopsight.schema import EVENT_TYPES
from shopsight.sessions import assign_sessions

EventType = Literal["view", "cart", "remove_from_cart", "favorite", "purchase"]
assert set(EventType.__args__) == set(EVENT_TYPES)  # type: ignore[attr-defined]

MAX_ID_LENGTH = 128
MAX_EVENTS_PER_USER = 2000
# Timestamps the feature code can represent (pandas nanoseconds end in 2262): anything else is a 400, not a 500.
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2200, 1, 1, tzinfo=timezone.utc)


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
    probability: float
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
    """Model input rows (in request order), whether each user had recent activity, and the as_of used."""
    now = now or datetime.now(timezone.utc)
    columns = feature_columns(params.windows_days)
    events = histories_to_events(users)
    as_ofs = [u.as_of or now for u in users]
    rows = np.repeat(_idle_features(params)[None, :], len(users), axis=0)
    active = np.zeros(len(users), dtype=bool)
    by_cutoff: dict[datetime, list[int]] = {}
    for i, t in enumerate(as_ofs):
        by_cutoff.setdefault(t, []).append(i)
    for cutoff, idx in by_cutoff.items():
        keys = pd.Index([str(i) for i in idx], dtype="string")
        # One cutoff (the usual case: as_of omitted) needs no filtering; vectorised lookups keep a batch cheap.
        subset = events if len(by_cutoff) == 1 else events[events["user_id"].isin(keys)]
        feats = build_user_features(subset, pd.Timestamp(cutoff), params)
        hit = keys.isin(feats.index)
        if hit.any():
            positions = np.asarray(idx)[hit]
            rows[positions] = model_input(feats.loc[keys[hit]], columns)
            active[positions] = True
    return rows, active.tolist(), as_ofs


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
