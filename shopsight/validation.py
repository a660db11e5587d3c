"""Row-level checks of the canonical event contract (a pandera schema): every failing row gets a reason,
none is dropped or altered silently.

Prices and quantities arrive as the text of the file (see shopsight.sources.canonical) and are parsed
here, strictly: `12,50`, `$5`, `0x10` are not numbers, `2.5` is not a quantity, and `inf` or `1e400`
is an infinite price; none is coerced into something else. Ids are kept exactly as read: an id with
leading or trailing whitespace, a NUL byte or another control character, or more than MAX_ID_LENGTH
characters is rejected (trimming would merge `u1 ` into `u1` behind the user's back).

Speed: the pandera schema (`contract_schema`) stays the contract, one check per reason; `failed_checks`
runs each check's vectorised function on whole columns (Arrow kernels on Arrow strings). The common
shapes take fast paths that give the same verdicts: plain numbers are read by Arrow's parser, a column
with no control byte passes that check without a regex; only the other rows go through pandas/Python.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.engines import pandas_engine
import pyarrow as pa_arrow
import pyarrow.compute as pc

from shopsight.schema import CANONICAL_COLUMNS, EVENT_TYPES, MAX_ID_LENGTH, REQUIRED_COLUMNS
from shopsight.sources.canonical import TIMESTAMP_PROBLEM  # the adapter's reason a timestamp did not convert
from shopsight.sources.reading import NUL_SENTINEL, TEXT  # NUL_SENTINEL: how the CSV reader shows a NUL byte

_NUMBER = r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*"
_INTEGER = r"\s*[+-]?\d+\s*"
_PLAIN_NUMBER = r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$"  # _NUMBER without spaces, in RE2's ASCII classes
_INFINITY = r"\s*[+-]?(?:inf|infinity)\s*"
_INT64_MAX = np.iinfo("int64").max
_EXACT_FLOAT_INT = 2**53  # beyond it a float cannot say which integer it meant


class ContractError(ValueError):
    """A source cannot be converted at all (e.g. a required column is missing)."""


def check_required_columns(frame: pd.DataFrame, source: str) -> None:
    """Fail with one message naming the file, the missing column(s) and the fix."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ContractError(
            f"{source}: missing required column(s) {', '.join(missing)}; "
            f"found {', '.join(map(str, frame.columns))}. Map them in params.yaml "
            f"(data.source / data.options.columns) or fix the file."
        )


def _check(fn, reason: str) -> pa.Check:
    # The check's name is the reason written to the rejects file; nulls are checked too.
    return pa.Check(fn, name=reason, ignore_na=False)


def _no_control_character(s: pd.Series) -> pd.Series:
    """True where the text holds no ASCII control character (missing text passes).

    In UTF-8 a byte below 0x20 or 0x7f is always that character, so a column whose text bytes hold none
    passes whole without a regex (a buffer may hold bytes beyond the column's values: a false alarm
    only means the regex runs)."""
    if isinstance(s.dtype, pd.StringDtype) and s.dtype.storage == "pyarrow":
        chunks = pa_arrow.chunked_array(pa_arrow.array(s.array)).chunks
        buffers = [chunk.buffers()[2] for chunk in chunks]
        clean = True
        for data in buffers:
            if data is not None:
                values = np.frombuffer(data, dtype=np.uint8)
                if (values < 0x20).any() or (values == 0x7F).any():
                    clean = False
                    break
        if clean:
            return pd.Series(True, index=s.index)
    return ~s.str.contains("[\\x00-\\x1f\\x7f]", regex=True).fillna(False)


def _id_checks(column: str, *, required: bool) -> list[pa.Check]:
    checks = [_check(lambda s: s.notna() & s.ne(""), f"missing {column}")] if required else []
    return checks + [
        _check(lambda s: ~s.str.contains(NUL_SENTINEL, regex=False).fillna(False), f"{column} contains a NUL byte"),
        _check(_no_control_character, f"{column} contains a control character (tab, newline, ...)"),
        _check(
            lambda s: s.isna() | s.str.strip().eq(s),
            f"{column} has leading or trailing whitespace (ids are kept exactly as read, never trimmed into "
            f"another id: trim them in the source)",
        ),
        _check(lambda s: s.isna() | s.str.len().le(MAX_ID_LENGTH), f"{column} longer than {MAX_ID_LENGTH} characters"),
    ]


@lru_cache(maxsize=8)
def contract_schema(min_timestamp: str, max_timestamp: str) -> pa.DataFrameSchema:
    """The event contract of DESIGN.md as a pandera schema over parsed columns (see `_parse`)."""
    lo, hi = pd.Timestamp(min_timestamp, tz="UTC"), pd.Timestamp(max_timestamp, tz="UTC")
    text = TEXT
    return pa.DataFrameSchema(
        {
            "user_id": pa.Column(text, _id_checks("user_id", required=True), nullable=True),
            "item_id": pa.Column(text, _id_checks("item_id", required=True), nullable=True),
            "session_id": pa.Column(text, _id_checks("session_id", required=False), nullable=True),
            "category": pa.Column(text, _id_checks("category", required=False), nullable=True),
            "event_type": pa.Column(
                text,
                _check(lambda s: s.isin(EVENT_TYPES), f"unknown event_type (expected one of {', '.join(EVENT_TYPES)})"),
                nullable=True,
            ),
            "timestamp": pa.Column(
                "datetime64[ns, UTC]",
                _check(lambda s: s.isna() | ((s >= lo) & (s <= hi)), f"timestamp outside [{min_timestamp}, {max_timestamp}]"),
                nullable=True,
            ),
            "timestamp_missing": pa.Column(bool, _check(lambda s: ~s, "missing timestamp")),
            "price": pa.Column(
                "float64",
                [
                    _check(lambda s: s.isna() | (s >= 0), "negative price"),
                    _check(lambda s: ~s.isin([np.inf, -np.inf]), "infinite price"),
                ],
                nullable=True,
            ),
            "price_is_number": pa.Column(bool, _check(lambda s: s, "price is not a number")),
            "quantity": pa.Column("Int64", _check(lambda s: s.isna() | (s >= 1), "quantity < 1"), nullable=True),
            "quantity_is_number": pa.Column(bool, _check(lambda s: s, "quantity is not a number")),
            "quantity_is_integer": pa.Column(bool, _check(lambda s: s, "quantity is not an integer")),
            "quantity_in_range": pa.Column(bool, _check(lambda s: s, "quantity out of range (beyond 64-bit integers)")),
        },
        strict=False,
    )


def _present_text(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(text, whether it holds anything but whitespace)."""
    text = values.astype(TEXT)
    return text, (text.str.strip().ne("") & text.notna()).fillna(False).astype(bool)


def _is_number_text(text: pd.Series) -> pd.Series:
    """Plain decimal or scientific notation, or inf/infinity: what a price or quantity may be written as."""
    return (text.str.fullmatch(_NUMBER) | text.str.fullmatch(_INFINITY, case=False)).fillna(False).astype(bool)


def _plain_numbers(text: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, rows read) for the text that is a plain decimal or scientific number (no spaces):
    Arrow's parser reads these at once, correctly rounded (as Python's float). Other rows are NaN, not read."""
    values = pa_arrow.array(text.array)
    rows = pc.match_substring_regex(values, _PLAIN_NUMBER).fill_null(False).to_numpy(zero_copy_only=False)
    numbers = np.full(len(text), np.nan)
    if rows.any():
        numbers[rows] = pc.cast(values.filter(pa_arrow.array(rows)), pa_arrow.float64()).to_numpy(zero_copy_only=False)
    return numbers, rows


def parse_price(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Price text (or numbers) -> (float64 values, is-a-number). Missing is NaN and a number; `1e400` and
    `inf` are +inf (rejected as infinite); `12,50`, `$5`, `0x10`, `nan` are not numbers."""
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("float64"), pd.Series(True, index=values.index)
    text, present = _present_text(values)
    numbers, read = _plain_numbers(text)
    rest = present.to_numpy() & ~read
    if rest.any():
        numbers[rest] = pd.to_numeric(text[rest].to_numpy(dtype=object, na_value=None), errors="coerce").astype("float64")
    numbers = pd.Series(numbers, index=values.index)
    # to_numeric is fast and strict but overflows to NaN (`1e400`): the rows it cannot read are looked at again
    unread = present & numbers.isna()
    if unread.any():
        written = _is_number_text(text[unread].str.strip())
        rows = written[written].index
        if len(rows):
            numbers[rows] = text[rows].str.strip().astype(object).map(float).astype("float64")
    is_number = ~present | numbers.notna()
    return numbers.astype("float64"), is_number.astype(bool)


def parse_quantity(values: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series, pd.Series]:
    """Quantity text (or numbers) -> (Int64 values, is-a-number, is-an-integer, fits-int64).

    Missing is <NA> (the contract's default of 1 applies later). `2.0` is 2; `2.5` is not an integer;
    `abc`, `nan` are not numbers; `1e20`, `9223372036854775808`, `inf` are out of range.
    """
    index = values.index
    if pd.api.types.is_integer_dtype(values.dtype):
        ok = pd.Series(True, index=index)
        return values.astype("Int64"), ok, ok.copy(), ok.copy()
    if pd.api.types.is_float_dtype(values.dtype):
        floats, present, is_number = values.astype("float64"), values.notna(), pd.Series(True, index=index)
        text = None
    else:
        text, present = _present_text(values)
        floats, is_number = parse_price(values)
    finite = np.isfinite(floats.to_numpy(dtype="float64", na_value=np.nan))
    whole = pd.Series(finite, index=index) & (floats == np.floor(floats))
    is_integer = ~present | ~is_number | ~pd.Series(finite, index=index) | whole
    in_range = ~present | ~is_number | (pd.Series(finite, index=index) & (floats.abs() < _EXACT_FLOAT_INT))
    exact = present & is_number & whole & in_range
    result = pd.array(np.where(exact, floats.fillna(0), 0).astype("int64"), dtype="Int64")
    result[~exact.to_numpy()] = pd.NA
    quantity = pd.Series(result, index=index)
    big = present & is_number & whole & ~in_range & pd.Series(finite, index=index)
    if text is not None and big.any():
        # Beyond 2**53 a float is not exact: integer text is read exactly, and kept if it fits int64.
        for row in big[big].index:
            written = text[row]
            if pd.Series([written]).str.fullmatch(_INTEGER).iloc[0] and abs(int(written)) <= _INT64_MAX:
                quantity[row] = int(written)
                in_range[row] = True
    return quantity, is_number.astype(bool), is_integer.astype(bool), in_range.astype(bool)


def _id_text(frame: pd.DataFrame, column: str, *, optional: bool) -> pd.Series:
    if column not in frame.columns:
        return pd.Series(pd.NA, index=frame.index, dtype=TEXT)
    values = frame[column].astype(TEXT)
    if optional:  # a blank optional field (no session, no category) is missing
        values = values.mask(values.str.strip().eq(""))
    return values


def _timestamps(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(UTC timestamps, problem): the adapter's reason where it gave one, "unparseable timestamp" for
    text that does not parse here."""
    values = frame["timestamp"]
    if TIMESTAMP_PROBLEM in frame.columns:
        problem = frame[TIMESTAMP_PROBLEM].astype(TEXT)
    else:
        problem = pd.Series(pd.NA, index=frame.index, dtype=TEXT)
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        stamps = values.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_any_dtype(values):
        stamps = values.dt.tz_localize("UTC")
    else:
        stamps = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
        text, present = _present_text(values)
        problem = problem.mask(present & stamps.isna() & problem.isna(), "unparseable timestamp")
    return stamps.astype("datetime64[ns, UTC]"), problem


def _parse(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Types only (nothing rejected here): ids exactly as read, event names lower-cased, times to UTC,
    prices and quantities parsed strictly. Also returns the adapters' timestamp problems."""
    price, price_ok = parse_price(frame["price"] if "price" in frame.columns else pd.Series(pd.NA, index=frame.index, dtype=TEXT))
    quantity_raw = frame["quantity"] if "quantity" in frame.columns else pd.Series(pd.NA, index=frame.index, dtype=TEXT)
    quantity, quantity_number, quantity_integer, quantity_range = parse_quantity(quantity_raw)
    timestamp, problem = _timestamps(frame)
    parsed = pd.DataFrame(
        {
            "user_id": _id_text(frame, "user_id", optional=False),
            "item_id": _id_text(frame, "item_id", optional=False),
            "event_type": frame["event_type"].astype(TEXT).str.strip().str.lower(),
            "timestamp": timestamp,
            "timestamp_missing": (timestamp.isna() & problem.isna()).to_numpy(bool),
            "session_id": _id_text(frame, "session_id", optional=True),
            "category": _id_text(frame, "category", optional=True),
            "price": price,
            "price_is_number": price_ok.to_numpy(bool),
            "quantity": quantity,
            "quantity_is_number": quantity_number.to_numpy(bool),
            "quantity_is_integer": quantity_integer.to_numpy(bool),
            "quantity_in_range": quantity_range.to_numpy(bool),
        },
        index=frame.index,
    )
    return parsed, problem


def _run_check(check: pa.Check, values: pd.Series) -> pd.Series:
    """The check's verdict per row. Its vectorised function is called directly: pandera's check backend adds
    nothing for a whole-column check that ignores no nulls, but costs an import of ~1.5 s on first use."""
    if check.element_wise or check.groupby is not None or check.ignore_na:
        return check(values).check_output
    return check._check_fn(values, **check._check_kwargs)


def failed_checks(parsed: pd.DataFrame, schema: pa.DataFrameSchema, source: str) -> Iterator[tuple[str, np.ndarray]]:
    """(reason, rows that fail it) for every check of the schema that some row fails.

    The schema's checks are run one by one rather than through `schema.validate`: with a million
    failing rows pandera's error report costs ~30 s and ~600 MB per chunk, and only the boolean
    outcome of each check is needed. A wrong dtype or a check that does not give one boolean per
    row is a bug, and fails loudly rather than letting rows through.
    """
    for name, column in schema.columns.items():
        values = parsed[name]
        if not column.dtype.check(pandas_engine.Engine.dtype(values.dtype)):
            raise ContractError(f"{source}: column {name} is {values.dtype}, the contract expects {column.dtype}. This is a shopsight bug.")
        for check in column.checks:
            try:
                outcome = _run_check(check, values)
            except Exception as exc:  # noqa: BLE001 - any failure of a check must stop the ingest
                raise ContractError(f"{source}: the event contract could not be checked ({check.name}: {exc!r}). This is a shopsight bug.") from exc
            if not isinstance(outcome, pd.Series) or len(outcome) != len(values) or not pd.api.types.is_bool_dtype(outcome.dtype):
                raise ContractError(f"{source}: the event contract could not be checked ({check.name} gave no verdict per row). This is a shopsight bug.")
            failed = ~outcome.fillna(False).to_numpy(dtype=bool)
            if failed.any():
                yield str(check.name), np.flatnonzero(failed)


def validate_events(
    frame: pd.DataFrame,
    *,
    source: str,
    min_timestamp: str = "1990-01-01",
    max_timestamp: str = "2100-01-01",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a chunk into canonical valid rows and rejected rows with a `reason` column.

    Valid rows have the canonical dtypes (quantity defaults to 1). Rejected rows keep their
    original values as strings plus `reason` (all failed checks, '; '-joined, the adapter's
    timestamp problem first) and `source`.
    """
    check_required_columns(frame, source)
    frame = frame.reset_index(drop=True)
    parsed, problem = _parse(frame)
    reasons = problem.fillna("").astype(object).to_numpy()
    for reason, failed in failed_checks(parsed, contract_schema(min_timestamp, max_timestamp), source):
        reasons[failed] = np.where(reasons[failed] != "", reasons[failed] + "; " + reason, reason)
    reasons = pd.Series(reasons, index=frame.index, dtype=object)
    bad = (reasons != "").to_numpy()
    ok = parsed.loc[~bad] if bad.any() else parsed  # no copy of a clean chunk
    valid = pd.DataFrame(
        {
            "user_id": ok["user_id"],
            "item_id": ok["item_id"],
            "event_type": _event_categorical(ok["event_type"]),
            "timestamp": ok["timestamp"],
            "session_id": ok["session_id"],
            "category": ok["category"],
            "price": ok["price"],
            "quantity": ok["quantity"].fillna(1).astype("int64"),
        }
    )
    rejects = frame.loc[bad].drop(columns=[TIMESTAMP_PROBLEM], errors="ignore")
    rejects = pd.DataFrame({col: _as_text(rejects[col]) for col in rejects.columns})
    rejects["reason"] = pd.array(reasons[bad].to_numpy(), dtype=TEXT)
    rejects["source"] = source
    return valid.reset_index(drop=True), rejects.reset_index(drop=True)


def _event_categorical(names: pd.Series) -> pd.Categorical:
    """Event names as the canonical categorical (a name outside EVENT_TYPES is NaN), coded by Arrow's hash
    lookup rather than through a Python object per row."""
    codes = pc.index_in(pa_arrow.array(names.astype(TEXT).array), value_set=pa_arrow.array(list(EVENT_TYPES), pa_arrow.string()))
    return pd.Categorical.from_codes(codes.fill_null(-1).to_numpy(zero_copy_only=False).astype("int8"), categories=list(EVENT_TYPES))


def _as_text(values: pd.Series) -> pd.Series:
    """A rejected column as text (Arrow's cast: fast for timestamps, shortest round-trip for floats)."""
    if pd.api.types.is_string_dtype(values.dtype) and values.dtype != object:
        return values.astype(TEXT)
    if values.dtype == object:
        return values.astype(TEXT)
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        # Arrow casts zone-aware times to text ten times slower than naive ones: cast UTC wall times, mark them Z.
        naive = pa_arrow.array(values.dt.tz_convert("UTC").dt.tz_localize(None), from_pandas=True).cast(pa_arrow.string())
        array = pc.binary_join_element_wise(naive, pa_arrow.scalar("Z"), "")
        return pd.Series(pd.arrays.ArrowStringArray(array), index=values.index, dtype=TEXT)
    array = pa_arrow.array(values, from_pandas=True).cast(pa_arrow.string())
    return pd.Series(pd.arrays.ArrowStringArray(array), index=values.index, dtype=TEXT)


def canonical_columns_only(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[list(CANONICAL_COLUMNS)]
