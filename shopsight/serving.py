"""What the service does with a request: the request schemas (strict types, bounded ids and numbers, dates the
feature code can represent), per-item error isolation for batched endpoints, and request -> features -> model
input with the same feature code as training."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Annotated, Any, Callable, Literal, Sequence

import numpy as np
import pandas as pd
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError
from pydantic_core import PydanticCustomError

from shopsight.config import FeatureParams
from shopsight.feature_fast import EventArrays, features_from_arrays
from shopsight.feature_sql import EVENT_COUNTS
from shopsight.features import feature_columns, model_input, model_input_values
from shopsight.schema import EVENT_TYPES
from shopsight.sessions import assign_sessions, session_numbers

log = logging.getLogger(__name__)

EventType = Literal["view", "cart", "remove_from_cart", "favorite", "purchase"]
assert set(EventType.__args__) == set(EVENT_TYPES)  # type: ignore[attr-defined]

MAX_ID_LENGTH = 128
MAX_EVENTS_PER_USER = 2000
# Prices and daily units the float32 models and their sums cannot overflow on: larger is a 400, not a NaN.
MAX_AMOUNT = 1e9
# Timestamps the feature code can represent (pandas nanoseconds end in 2262): anything else is a 400, not a 500.
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2200, 1, 1, tzinfo=timezone.utc)
ONE_MICROSECOND = timedelta(microseconds=1)
EVENT_INDEX = {e: i for i, e in enumerate(EVENT_COUNTS)}
_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _in_range(value: datetime) -> datetime:
    try:
        value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    except OverflowError:  # e.g. 0001-01-01T00:00+00:04 has no UTC datetime
        raise ValueError(f"{value.isoformat()} is outside {EARLIEST.year}..{LATEST.year - 1}") from None
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"{value.isoformat()} is outside {EARLIEST.year}..{LATEST.year - 1}")
    return value


def _day_in_range(value: date) -> date:
    # a year short of LATEST: a forecast's days after it stay representable too
    last = LATEST.date() - timedelta(days=366)
    if not EARLIEST.date() <= value <= last:
        raise ValueError(f"{value.isoformat()} is outside {EARLIEST.date().isoformat()}..{last.isoformat()}")
    return value


def _iso_text(value: Any) -> Any:
    """ISO 8601 text (or a date built in code): a number is refused, since its epoch unit (s, ms, us) would be a guess."""
    if isinstance(value, (datetime, date)) or (isinstance(value, str) and not _NUMBER.fullmatch(value)):
        return value
    raise ValueError("give an ISO 8601 date or date-time such as 2026-03-09T10:00:00Z, not a number: the unit of a numeric epoch would be a guess")


# Strict types for request fields: "12.5" is not a price, true is not a count, 1767225600 is not a timestamp.
Id = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=MAX_ID_LENGTH)]
Amount = Annotated[float, Field(strict=True, ge=0, le=MAX_AMOUNT, allow_inf_nan=False)]
Count = Annotated[int, Field(strict=True, ge=1, le=100_000)]
Timestamp = Annotated[datetime, BeforeValidator(_iso_text), AfterValidator(_in_range)]
Day = Annotated[date, BeforeValidator(_iso_text), AfterValidator(_day_in_range)]


class EventIn(BaseModel):
    """One shopper event as the service receives it."""

    model_config = ConfigDict(extra="forbid")
    item_id: Id
    event_type: EventType
    timestamp: Timestamp = Field(description="ISO 8601; a timestamp without an offset is taken as UTC")
    price: Amount | None = None
    category: Annotated[str, StringConstraints(strict=True, max_length=MAX_ID_LENGTH)] | None = None
    session_id: Annotated[str, StringConstraints(strict=True, max_length=MAX_ID_LENGTH)] | None = None
    quantity: Count = 1


class UserHistory(BaseModel):
    """A user's recent events; features are computed as of `as_of` (default: now) from events before it."""

    model_config = ConfigDict(extra="forbid")
    user_id: Id
    events: list[EventIn] = Field(default_factory=list, max_length=MAX_EVENTS_PER_USER)
    as_of: Timestamp | None = None


# ---- errors: a bad item fails its own request (400), never the requests batched with it ----


def request_error(title: str, loc: tuple, message: str) -> ValidationError:
    """A 400 shaped like the schema's own: {"error": "1 validation error for <title>", "detail": [{"loc", "msg"}]}."""
    return request_errors(title, [(loc, message)])


def request_errors(title: str, errors: Sequence[tuple[tuple, str]]) -> ValidationError:
    return ValidationError.from_exception_data(
        title, [{"type": PydanticCustomError("invalid_request", "{reason}", {"reason": m}), "loc": loc, "input": None} for loc, m in errors]
    )


class NonFiniteAnswer(ValueError):
    """The model answered NaN or infinity for an input: never sent (bare NaN is not JSON)."""


@dataclass(frozen=True)
class ItemFailure:
    """In place of the answer to one item that could not be answered."""

    loc: tuple
    message: str
    client_error: bool  # the input's fault (400) or the server's (500)


class BatchAnswers(list):
    """A batched endpoint's answers, some of them ItemFailure.

    BentoML hands each request of an adaptive batch its own slice of the answers (its DefaultContainer slices the
    list by request) and raises an Exception found in place of a request's answers for that request only. A slice
    holding a failure therefore becomes that request's error: a 400 naming the item (or a 500 for a server fault),
    while every other request of the batch gets its answers. tests/test_serving.py checks this against BentoML's own
    dispatcher."""

    def __init__(self, answers, title: str) -> None:
        super().__init__(answers)
        self.title = title

    def __getitem__(self, index):
        part = super().__getitem__(index)
        if not isinstance(index, slice):
            return part
        failures = [a for a in part if isinstance(a, ItemFailure)]
        if not failures:
            return list(part)
        if all(f.client_error for f in failures):
            return request_errors(self.title, [(f.loc, f.message) for f in failures])
        return RuntimeError("; ".join(f.message for f in failures if not f.client_error))

    def settle(self) -> list:
        """All answers, or the error of the whole list (for an endpoint that is not batched: one request)."""
        answers = self[:]
        if isinstance(answers, Exception):
            raise answers
        return answers


def answer_batch(items: list, answer: Callable[[list], list], loc_of: Callable[[Any], tuple], title: str) -> BatchAnswers:
    """`answer(items)` in one call; if that raises, one call per item, so an item that cannot be answered fails alone.

    `answer` raises ValueError (or ArithmeticError) for an input it cannot answer, NonFiniteAnswer included (see
    `require_finite`): that item's request gets a 400; any other exception is the server's fault: a 500 for that
    request only, with the traceback in the log."""
    try:
        return BatchAnswers(answer(items), title)
    except Exception:  # noqa: BLE001 - isolated below, item by item
        if len(items) > 1:
            log.info("%s: a batch of %d items failed; answering them one by one", title, len(items))
    return BatchAnswers([_answer_one(item, answer, loc_of, title) for item in items], title)


def _answer_one(item, answer: Callable[[list], list], loc_of: Callable[[Any], tuple], title: str):
    try:
        (one,) = answer([item])
        return one
    except (ValueError, ArithmeticError) as exc:
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        return ItemFailure(loc_of(item), f"cannot be answered: {reason}", client_error=True)
    except Exception as exc:  # noqa: BLE001 - a server fault: logged with its traceback, a 500 for this request only
        log.exception("%s: answering %s failed", title, loc_of(item))
        return ItemFailure(loc_of(item), f"{type(exc).__name__} (see the server log)", client_error=False)


def require_finite(answers: list) -> list:
    """The answers unchanged, or NonFiniteAnswer naming the first field holding NaN or infinity."""
    for answer in answers:
        path = _non_finite_path(answer)
        if path is not None:
            raise NonFiniteAnswer(f"the model gave a non-finite {path} for this input (outside the range it can answer)")
    return answers


def _non_finite_path(value: Any, path: str = "") -> str | None:
    if isinstance(value, float):
        return None if math.isfinite(value) else path or "value"
    if isinstance(value, BaseModel):
        items = value.__dict__.items()
    elif isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return None
    for key, child in items:
        found = _non_finite_path(child, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


class OneLineClientErrors(logging.Filter):
    """BentoML logs every failed request with its full traceback ("Exception on /path [POST]"). A client's mistake
    (a 4xx) and a shed request (503) are not the server's fault: one line each, at INFO, naming the cause."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        status = _expected_status(exc)
        if status is None:
            return True
        path, method = (tuple(record.args) + ("?", "?"))[:2] if isinstance(record.args, tuple) else ("?", "?")
        record.msg, record.args = "%d on %s [%s]: %s", (status, path, method, _one_line(exc))
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _expected_status(exc: BaseException | None) -> int | None:
    if isinstance(exc, ValidationError):
        return 400
    code = getattr(getattr(exc, "error_code", None), "value", None)  # a BentoMLException
    return code if isinstance(code, int) and (400 <= code < 500 or code == 503) else None


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        parts = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_input=False, include_url=False)[:3]]
        text = f"{exc.error_count()} validation error(s): " + "; ".join(parts)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:500]


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
    present, matrix = features_from_arrays(
        request_event_arrays(users), cutoff_ns, params.windows_days, params.history_days, params.utc_offset_ns
    )
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
