"""Converting raw source fields into canonical event columns, without repairing bad values."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from shopsight.schema import CANONICAL_COLUMNS
from shopsight.sources.reading import RAW_LINE

UNKNOWN_EVENT_PREFIX = "unknown:"
CHUNK_COLUMNS: tuple[str, ...] = (*CANONICAL_COLUMNS, RAW_LINE)
_NS_PER_UNIT = {"s": 1_000_000_000, "ms": 1_000_000}
_MAX_NS = np.iinfo("int64").max - 1  # NaT is int64 min; keep clear of both ends


def map_event_types(raw: pd.Series, mapping: Mapping[str, str]) -> pd.Series:
    """Map raw event names; an unmapped name becomes 'unknown:<raw>' (rejected later), a missing one None."""
    text = raw.astype("string")
    mapped = text.map(dict(mapping), na_action="ignore")
    unknown = text.notna() & mapped.isna()
    result = mapped.astype(object)
    result[unknown] = UNKNOWN_EVENT_PREFIX + text[unknown].astype(object)
    result[text.isna()] = None
    return result


def epoch_to_utc(raw: pd.Series, unit: str) -> pd.Series:
    """Seconds or milliseconds since the epoch -> UTC timestamps; unparseable or out of range -> NaT.

    Integer parts are converted in int64 so millisecond values stay exact (a float path would be
    off by up to ~100 ns).
    """
    factor = _NS_PER_UNIT[unit]
    values = pd.to_numeric(raw, errors="coerce").astype("float64").to_numpy()
    valid = np.isfinite(values) & (np.abs(values) < _MAX_NS / factor)
    whole = np.floor(np.where(valid, values, 0.0))
    fraction = np.where(valid, values, 0.0) - whole
    nanos = whole.astype("int64") * factor + np.round(fraction * factor).astype("int64")
    stamps = pd.to_datetime(nanos, unit="ns", utc=True)
    return pd.Series(stamps, index=raw.index).where(valid).astype("datetime64[ns, UTC]")


def parse_timestamps(raw: pd.Series, fmt: str | None, *, timezone: str = "UTC") -> pd.Series:
    """Text -> UTC timestamps with a strftime format (ISO 8601 when None); failures -> NaT.

    Times without an offset are taken in `timezone`; times that do not exist or are
    ambiguous there (DST changes) become NaT.
    """
    fmt = fmt or "ISO8601"
    text = raw.astype("string").str.strip()
    if timezone == "UTC":
        parsed = pd.to_datetime(text, format=fmt, errors="coerce", utc=True)
    else:
        parsed = pd.to_datetime(text, format=fmt, errors="coerce")
        if isinstance(parsed.dtype, pd.DatetimeTZDtype):
            parsed = parsed.dt.tz_convert("UTC")
        else:
            parsed = parsed.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
    return parsed.astype("datetime64[ns, UTC]")


def datetimes_to_utc(values: pd.Series, *, timezone: str = "UTC") -> pd.Series:
    """Datetime values (e.g. from Parquet) -> UTC; naive ones are taken in `timezone`."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    return values.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC").astype(
        "datetime64[ns, UTC]"
    )


def to_float(raw: pd.Series) -> pd.Series:
    """Numbers as float64; empty or non-numeric text -> NaN. Signs are kept."""
    return pd.to_numeric(raw, errors="coerce").astype("float64")


def to_quantity(raw: pd.Series) -> pd.Series:
    """Whole numbers as Int64 (sign and zero kept for the validator); missing or fractional -> <NA>."""
    values = to_float(raw)
    whole = values.notna() & np.isfinite(values) & (values == np.floor(values)) & (values.abs() < 2**53)
    return values.where(whole).astype("Int64")


def to_id(raw: pd.Series) -> pd.Series:
    """Ids as "string"; whole floats (ids that went through a float column) lose their '.0'."""
    if pd.api.types.is_float_dtype(raw.dtype):
        values = raw.astype("float64")
        if bool((values.dropna() == np.floor(values.dropna())).all()):
            return values.astype("Int64").astype("string")
    return raw.astype("string")


def canonical_chunk(
    *,
    raw_line: pd.Series,
    user_id: pd.Series,
    item_id: pd.Series | str,
    event_type: pd.Series | str,
    timestamp: pd.Series,
    session_id: pd.Series | None = None,
    category: pd.Series | None = None,
    price: pd.Series | None = None,
    quantity: pd.Series | None = None,
) -> pd.DataFrame:
    """Assemble one chunk with exactly the canonical columns, their dtypes and `raw_line`."""
    n = len(raw_line)

    def column(values: pd.Series | str | None, dtype: str) -> np.ndarray | pd.api.extensions.ExtensionArray:
        if values is None:
            return pd.array([pd.NA] * n, dtype=dtype) if dtype != "float64" else np.full(n, np.nan)
        if isinstance(values, str):
            return pd.array([values] * n, dtype=dtype) if dtype != "object" else np.full(n, values, dtype=object)
        series = values.astype(dtype) if dtype != "object" else values.astype(object)
        return series.to_numpy() if dtype in ("object", "float64") else series.array

    frame = pd.DataFrame(
        {
            "user_id": column(user_id, "string"),
            "item_id": column(item_id, "string"),
            "event_type": column(event_type, "object"),
            "timestamp": timestamp.astype("datetime64[ns, UTC]").array,
            "session_id": column(session_id, "string"),
            "category": column(category, "string"),
            "price": column(price, "float64"),
            "quantity": column(quantity, "Int64"),
            RAW_LINE: raw_line.to_numpy(dtype="int64"),
        }
    )
    return frame[list(CHUNK_COLUMNS)]
