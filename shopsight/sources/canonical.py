"""Converting raw source fields into canonical event columns, without repairing bad values.

Prices and quantities stay text until the validator parses them (a converter here would have to
guess what `12,50` or `2.5` means); a timestamp that does not convert gets the reason why in
TIMESTAMP_PROBLEM, so the reject says "out of range as unix seconds (looks like milliseconds)"
rather than "unparseable".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from shopsight.schema import CANONICAL_COLUMNS
from shopsight.sources.reading import RAW_LINE, TEXT

UNKNOWN_EVENT_PREFIX = "unknown:"
TIMESTAMP_PROBLEM = "timestamp_problem"
CHUNK_COLUMNS: tuple[str, ...] = (*CANONICAL_COLUMNS, RAW_LINE, TIMESTAMP_PROBLEM)
_NS_PER_UNIT = {"s": 1_000_000_000, "ms": 1_000_000}
_UNIT_NAMES = {"s": "seconds", "ms": "milliseconds"}
# a unit's value divided by 1000 (or 10**6) read right in the next finer units
_FINER_UNITS = {"s": ("milliseconds", "microseconds"), "ms": ("microseconds", "nanoseconds")}
_SECONDS_LIKE = (1e8, 1e10)  # unix seconds of 1973..2286, i.e. the first 115 days of 1970 in milliseconds
_MAX_NS = np.iinfo("int64").max - 1  # NaT is int64 min; keep clear of both ends
RANGE_TEXT = f"{pd.Timestamp.min.date()}..{pd.Timestamp.max.date()}"
_NUMBER = r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*"


@dataclass(frozen=True)
class RawChunk:
    """A chunk of a source as read (the file's column labels, `raw_line`; fields as text, or typed where a Parquet
    file types them), with its mapping to the canonical columns, for shopsight.validation.split_plain_rows: the
    rows whose every field is of the plainest shape are checked and converted there in Arrow kernels; the others
    (or all, for a reader that wants frames) go through the adapter's own conversion, `canonical(rows)`, and then
    the full checks. A source yields one only where text times are ISO 8601 and naive times UTC."""

    raw: pd.DataFrame
    columns: Mapping[str, Any]  # canonical name -> the raw frame's label (None: the source has no such column)
    event_map: Mapping[str, str]  # raw event text -> canonical event (unused with event_constant)
    event_constant: str | None
    convert: Callable[[pd.DataFrame], pd.DataFrame]  # raw rows -> a canonical chunk (unvalidated)

    def __len__(self) -> int:
        return len(self.raw)

    def column(self, name: str) -> pa.ChunkedArray | None:
        """Canonical column `name` as read (Arrow text without a copy; typed columns of a Parquet file as Arrow),
        None when the source has none."""
        label = self.columns.get(name)
        if label is None:
            return None
        values = self.raw[label]
        text = _arrow_text(values)
        return text if text is not None else pa.chunked_array([pa.array(values, from_pandas=True)])

    def canonical(self, rows: np.ndarray | None = None) -> pd.DataFrame:
        """The adapter's canonical chunk of all rows, or of those where the boolean mask `rows` is set."""
        if rows is None:
            return self.convert(self.raw)
        keep = pa.array(rows)
        subset = {}
        for label in self.raw.columns:  # Arrow's filter per column: pandas' masked take is ~10x slower on Arrow text
            values = self.raw[label]
            text = _arrow_text(values)
            subset[label] = pd.arrays.ArrowStringArray(text.filter(keep)) if text is not None else values.array[rows]
        return self.convert(pd.DataFrame(subset, columns=self.raw.columns))


def _arrow_text(values: pd.Series) -> pa.ChunkedArray | None:
    """An Arrow-backed text column's Arrow array (no copy), None for any other column."""
    if isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow":
        return pa.chunked_array(values.array.__arrow_array__())
    return None


def map_event_types(raw: pd.Series, mapping: Mapping[str, str]) -> pd.Series:
    """Map raw event names; an unmapped name becomes 'unknown:<raw>' (rejected later), a missing one None."""
    text = raw.astype(TEXT)
    # Arrow's hash lookup instead of a Python dict lookup per row
    mapping = {key: value for key, value in mapping.items() if isinstance(key, str)}  # only text keys can match text
    positions = pc.index_in(pa.array(text.array), value_set=pa.array(list(mapping), pa.string()))
    # one Python string per distinct event, shared by its rows (not a new object per row)
    names = np.array([*mapping.values(), None], dtype=object)
    mapped = pd.Series(names[positions.fill_null(len(mapping)).to_numpy(zero_copy_only=False)], index=raw.index, dtype=object)
    unknown = text.notna() & mapped.isna()
    result = mapped
    result[unknown] = UNKNOWN_EVENT_PREFIX + text[unknown].astype(object)
    result[text.isna()] = None
    return result


def _no_problem(index: pd.Index) -> pd.Series:
    # built from Arrow nulls: filling a million-row text column with NA the pandas way takes ~0.1 s
    return pd.Series(pd.arrays.ArrowStringArray(pa.nulls(len(index), pa.large_string())), index=index, dtype=TEXT)


def epoch_to_utc(raw: pd.Series, unit: str) -> tuple[pd.Series, pd.Series]:
    """Seconds or milliseconds since the epoch -> (UTC timestamps, problem per row).

    A missing value is NaT with no problem (the validator calls it missing); text that is not a
    number and numbers beyond the representable range are NaT with the reason (for a value that
    fits 1000 or 10**6 times smaller, the reason suggests the finer unit). Integer parts are
    converted in int64 so millisecond values stay exact (a float path would be off by up to ~100 ns).
    """
    factor = _NS_PER_UNIT[unit]
    text = raw.astype(TEXT)
    present = text.notna() & text.str.strip().ne("")
    is_number = text.str.fullmatch(_NUMBER).fillna(False).astype(bool)
    values = pd.to_numeric(text.where(is_number), errors="coerce").astype("float64").to_numpy()
    valid = np.isfinite(values) & (np.abs(values) < _MAX_NS / factor)
    whole = np.floor(np.where(valid, values, 0.0))
    fraction = np.where(valid, values, 0.0) - whole
    nanos = whole.astype("int64") * factor + np.round(fraction * factor).astype("int64")
    stamps = pd.Series(pd.to_datetime(nanos, unit="ns", utc=True), index=raw.index).where(valid).astype("datetime64[ns, UTC]")

    problem = _no_problem(raw.index)
    problem[present & ~is_number] = f"timestamp is not a number (expected unix {_UNIT_NAMES[unit]})"
    out_of_range = (present & is_number).to_numpy() & ~valid
    if out_of_range.any():
        magnitude = np.abs(np.nan_to_num(values, nan=np.inf, posinf=np.inf, neginf=np.inf))
        limit = _MAX_NS / factor
        finer, finest = _FINER_UNITS[unit]
        base = f"timestamp out of range as unix {_UNIT_NAMES[unit]} (representable: {RANGE_TEXT})"
        reasons = np.where(
            magnitude / 1e3 < limit,
            f"{base}; looks like {finer}: check the unit",
            np.where(magnitude / 1e6 < limit, f"{base}; looks like {finest}: check the unit", base),
        )
        problem[out_of_range] = reasons[out_of_range]
    if unit == "ms":
        # Seconds read as milliseconds land in January 1970 (no shop data does): say so, don't keep the date.
        seconds_like = valid & (np.abs(np.where(valid, values, 0.0)) >= _SECONDS_LIKE[0]) & (np.abs(np.where(valid, values, 0.0)) < _SECONDS_LIKE[1])
        if seconds_like.any():
            problem[seconds_like] = "timestamp looks like unix seconds, not milliseconds (it would fall in January 1970): check the unit"
            stamps = stamps.mask(seconds_like)
    return stamps, problem


def _describe_format(fmt: str) -> str:
    return "ISO 8601" if fmt == "ISO8601" else fmt


# A run of digits that would be a year outside pandas' range: only such text is worth parsing again.
_YEAR_OUT_OF_RANGE = r"(?:^|\D)(?:1[0-5]\d\d|16[0-6]\d|167[0-7]|226[2-9]|22[7-9]\d|2[3-9]\d\d|[3-9]\d{3})(?:\D|$)"


def _parses_beyond_range(text: str, formats: Sequence[str]) -> bool:
    """Whether `text` is a valid date in one of `formats` that pandas' nanosecond timestamps cannot hold."""
    for fmt in formats:
        try:
            if fmt == "ISO8601":
                datetime.fromisoformat(text.replace("Z", "+00:00"))
            else:
                datetime.strptime(text, fmt)
        except (ValueError, OverflowError):
            continue
        return True
    return False


def _localize(parsed: pd.Series, timezone: str, problem: pd.Series) -> pd.Series:
    """Naive local times -> UTC; times a DST change skips or repeats are NaT with their reason."""
    local = parsed.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
    lost = local.isna() & parsed.notna()
    if lost.any():
        # Localising again with each rule relaxed tells the two kinds apart.
        nonexistent = parsed.dt.tz_localize(timezone, ambiguous=np.ones(len(parsed), dtype=bool), nonexistent="NaT").isna()
        problem[lost & nonexistent] = f"nonexistent local time in {timezone} (skipped by a daylight-saving change)"
        problem[lost & ~nonexistent] = f"ambiguous local time in {timezone} (repeated by a daylight-saving change)"
    return local.dt.tz_convert("UTC")


# ISO 8601 text of the usual shapes (date and time to the second or finer, with an offset or without): Arrow's
# parser reads these ~10x faster than pandas and to the same instant; any other text is left to pandas.
ISO_ZONED = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:?\d{2})$"
ISO_NAIVE = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?$"
_NAT = np.iinfo("int64").min


def _iso8601_utc_fast(text: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(nanoseconds since the epoch, rows read) for the rows of `text` (ISO 8601, naive = UTC) that Arrow's
    parser reads; the other rows (another shape, an impossible date, beyond the nanosecond range) are not
    read here and go to pandas."""
    values = pa.array(text.astype(TEXT).array)
    nanos = np.full(len(text), _NAT, dtype="int64")
    read = np.zeros(len(text), dtype=bool)
    remaining = np.arange(len(text))  # positions not read yet: each shape is looked for among these only
    for pattern, arrow_type in ((ISO_ZONED, pa.timestamp("ns", tz="UTC")), (ISO_NAIVE, pa.timestamp("ns"))):
        if not len(remaining):
            break
        subset = values if len(remaining) == len(text) else values.take(pa.array(remaining))
        match = pc.match_substring_regex(subset, pattern).fill_null(False).to_numpy(zero_copy_only=False)
        if not match.any():
            continue
        try:
            stamps = pc.cast(subset if match.all() else subset.filter(pa.array(match)), arrow_type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue  # some row does not convert (e.g. February 30th): pandas reads all of this shape and says which
        rows = remaining[match]
        nanos[rows] = stamps.cast(pa.int64()).to_numpy(zero_copy_only=False)
        read[rows] = True
        remaining = remaining[~match]
    return nanos, read


def _parse_one(text: pd.Series, fmt: str, timezone: str, problem: pd.Series) -> pd.Series:
    if timezone == "UTC":
        if fmt == "ISO8601":
            nanos, read = _iso8601_utc_fast(text)
            parsed = pd.Series(pd.DatetimeIndex(nanos.view("datetime64[ns]")).tz_localize("UTC"), index=text.index)
            if not read.all():
                parsed[~read] = pd.to_datetime(text[~read], format=fmt, errors="coerce", utc=True).astype("datetime64[ns, UTC]")
            return parsed
        return pd.to_datetime(text, format=fmt, errors="coerce", utc=True)
    parsed = pd.to_datetime(text, format=fmt, errors="coerce")
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        return parsed.dt.tz_convert("UTC")
    return _localize(parsed, timezone, problem)


def parse_timestamps(
    raw: pd.Series, fmt: str | Sequence[str] | None, *, timezone: str = "UTC"
) -> tuple[pd.Series, pd.Series]:
    """Text -> (UTC timestamps, problem per row) with a strftime format (ISO 8601 when None), or
    several formats tried in order.

    Times without an offset are taken in `timezone`; times that do not exist or are ambiguous
    there (DST changes) are NaT with that reason, as are dates beyond pandas' range and text that
    matches no format. Missing text is NaT with no problem.
    """
    formats = [fmt or "ISO8601"] if fmt is None or isinstance(fmt, str) else [f or "ISO8601" for f in fmt]
    text = raw.astype(TEXT).str.strip()
    present = (text.notna() & text.ne("")).astype(bool)
    problem = _no_problem(raw.index)
    parsed = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns, UTC]")
    todo = present
    for each in formats:
        if not todo.any():
            break
        part = text[todo]
        part_problem = _no_problem(part.index)
        if todo.all():  # every row at once: no masked assignment (a copy per row of a million)
            parsed = _parse_one(part, each, timezone, part_problem).astype("datetime64[ns, UTC]")
            problem = part_problem
        else:
            parsed[todo] = _parse_one(part, each, timezone, part_problem).astype("datetime64[ns, UTC]")
            problem[part_problem.index] = part_problem
        todo = todo & parsed.isna() & problem.isna()
    if todo.any():
        expected = " or ".join(_describe_format(f) for f in formats)
        problem[todo] = f"unparseable timestamp (expected {expected})"
        # Only text with a far-off year is parsed again, one by one, to tell "out of range" apart.
        unparsed = text[todo]
        far_off = unparsed.str.contains(_YEAR_OUT_OF_RANGE, regex=True).fillna(False).astype(bool)
        if far_off.any():
            beyond = unparsed[far_off].map(lambda value: _parses_beyond_range(value, formats)).astype(bool)
            problem[beyond[beyond].index] = f"timestamp out of range (representable: {RANGE_TEXT})"
    return parsed, problem


def datetimes_to_utc(values: pd.Series, *, timezone: str = "UTC") -> tuple[pd.Series, pd.Series]:
    """Datetime values (e.g. from Parquet) -> (UTC, problem); naive ones are taken in `timezone`."""
    problem = _no_problem(values.index)
    # Parquet keeps second/milli/microsecond times beyond the nanosecond range pandas computes in.
    zone = "UTC" if isinstance(values.dtype, pd.DatetimeTZDtype) else None
    lo, hi = pd.Timestamp.min.ceil("s").tz_localize(zone), pd.Timestamp.max.floor("s").tz_localize(zone)
    beyond = values.notna() & ((values < lo) | (values > hi))
    if beyond.any():
        problem[beyond] = f"timestamp out of range (representable: {RANGE_TEXT})"
        values = values.mask(beyond)
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").astype("datetime64[ns, UTC]"), problem
    return _localize(values.astype("datetime64[ns]"), timezone, problem).astype("datetime64[ns, UTC]"), problem


def number_text(values: pd.Series) -> pd.Series:
    """A price or quantity column as text for the validator: text stays as read, numbers are written
    exactly (shortest round-trip form), missing values stay <NA>."""
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.astype(TEXT).str.lower()
    if pd.api.types.is_numeric_dtype(values.dtype):
        array = pa.array(values, from_pandas=True).cast(pa.string())
        return pd.Series(pd.arrays.ArrowStringArray(array), index=values.index, dtype=TEXT)
    return values.astype(TEXT)


def negate_number_text(text: pd.Series) -> pd.Series:
    """Flip the sign of number text ("-4" -> "4", "5" -> "-5"); text that is not a number is left as is."""
    text = text.astype(TEXT).str.strip()
    number = text.str.fullmatch(_NUMBER).fillna(False).astype(bool)
    negative = number & text.str.startswith("-").fillna(False).astype(bool)
    positive = number & ~negative
    out = text.copy()
    out[negative] = text[negative].str.slice(1)
    out[positive] = "-" + text[positive].str.lstrip("+")
    return out


def to_id(raw: pd.Series) -> pd.Series:
    """Ids as "string"; whole floats (ids that went through a float column) lose their '.0'."""
    if pd.api.types.is_float_dtype(raw.dtype):
        values = raw.astype("float64")
        if bool((values.dropna() == np.floor(values.dropna())).all()):
            return values.astype("Int64").astype(TEXT)
    return raw.astype(TEXT)


def canonical_chunk(
    *,
    raw_line: pd.Series,
    user_id: pd.Series,
    item_id: pd.Series | str,
    event_type: pd.Series | str,
    timestamp: pd.Series | tuple[pd.Series, pd.Series],
    session_id: pd.Series | None = None,
    category: pd.Series | None = None,
    price: pd.Series | None = None,
    quantity: pd.Series | None = None,
) -> pd.DataFrame:
    """Assemble one chunk with exactly CHUNK_COLUMNS, their dtypes and `raw_line`.

    `timestamp` is a converter's (values, problem) pair, or values alone. price and quantity are
    kept as text (see number_text) for the validator to parse.
    """
    n = len(raw_line)
    stamps, problem = timestamp if isinstance(timestamp, tuple) else (timestamp, None)

    def column(values: pd.Series | str | None, dtype) -> np.ndarray | pd.api.extensions.ExtensionArray:
        if values is None:
            return pd.array([pd.NA] * n, dtype=dtype)
        if isinstance(values, str):
            return pd.array([values] * n, dtype=dtype) if dtype != "object" else np.full(n, values, dtype=object)
        series = values.astype(dtype) if dtype != "object" else values.astype(object)
        return series.to_numpy() if dtype == "object" else series.array

    frame = pd.DataFrame(
        {
            "user_id": column(user_id, TEXT),
            "item_id": column(item_id, TEXT),
            "event_type": column(event_type, "object"),
            "timestamp": stamps.astype("datetime64[ns, UTC]").array,
            "session_id": column(session_id, TEXT),
            "category": column(category, TEXT),
            "price": column(None if price is None else number_text(price), TEXT),
            "quantity": column(None if quantity is None else number_text(quantity), TEXT),
            RAW_LINE: raw_line.to_numpy(dtype="int64"),
            TIMESTAMP_PROBLEM: column(problem, TEXT),
        }
    )
    return frame[list(CHUNK_COLUMNS)]
