"""Row-level checks of the canonical event contract: every failing row gets a reason, none is dropped or
altered silently.

Prices and quantities arrive as the text of the file (see shopsight.sources.canonical) and are parsed
here, strictly: `12,50`, `$5`, `0x10` are not numbers, `2.5` is not a quantity, and `inf` or `1e400`
is an infinite price; none is coerced into something else. Ids are kept exactly as read: an id with
leading or trailing whitespace, a NUL byte or another control character, or more than MAX_ID_LENGTH
characters is rejected (trimming would merge `u1 ` into `u1` behind the user's back).

The contract is one list of named, vectorised checks per parsed column (`contract_checks`); `contract_schema`
gives it as a pandera schema (the same functions, each named by its reason). Speed: `failed_checks` runs each
check's function on whole columns (Arrow kernels on Arrow strings), without pandera's import or error report. The common
shapes take fast paths that give the same verdicts: plain numbers are read by Arrow's parser, a column
with no control byte passes that check without a regex; only the other rows go through pandas/Python.
Ingest goes further for a CSV read as RawChunks: `split_plain_rows` takes the rows of the plainest shapes
straight from the file's text to canonical Arrow columns (no pandas), and only the rest come here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa_arrow
import pyarrow.compute as pc

from shopsight.schema import CANONICAL_ARROW, CANONICAL_COLUMNS, EVENT_TYPES, MAX_ID_LENGTH, REQUIRED_COLUMNS
from shopsight.sources.canonical import ISO_NAIVE, ISO_ZONED, RawChunk
from shopsight.sources.canonical import TIMESTAMP_PROBLEM  # the adapter's reason a timestamp did not convert
from shopsight.sources.reading import NUL_SENTINEL, TEXT  # NUL_SENTINEL: how the CSV reader shows a NUL byte

if TYPE_CHECKING:
    import pandera.pandas as pa

_NUMBER = r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*"
_INTEGER = r"\s*[+-]?\d+\s*"
_PLAIN_NUMBER = r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$"  # _NUMBER without spaces, in RE2's ASCII classes
_INFINITY = r"\s*[+-]?(?:inf|infinity)\s*"
_INT64_MAX = np.iinfo("int64").max
# The plainest shapes (split_plain_rows): text that passes every check of its column and converts the same whichever path
# reads it. An id of printable ASCII without spaces; a price of digits with an optional fraction; a quantity of digits.
_PLAIN_ID = rf"^[!-~]{{1,{MAX_ID_LENGTH}}}$"
_PLAIN_PRICE = r"^(?:\d{1,15}(?:\.\d{0,15})?|\.\d{1,15})$"
_PLAIN_QUANTITY = r"^\d{1,15}$"
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


@dataclass(frozen=True)
class ContractCheck:
    """One rule of the contract: `fn` maps a whole parsed column to one boolean per row (True: passes; nulls are
    checked too), and `reason` is what a failing row's rejects entry says."""

    reason: str
    fn: Callable[[pd.Series], pd.Series]


@dataclass(frozen=True)
class ContractColumn:
    """A parsed column's dtype, whether it may hold nulls, and its checks."""

    dtype: Any
    nullable: bool
    checks: tuple[ContractCheck, ...]


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


def _id_checks(column: str, *, required: bool) -> tuple[ContractCheck, ...]:
    checks = [ContractCheck(f"missing {column}", lambda s: s.notna() & s.ne(""))] if required else []
    return tuple(checks) + (
        ContractCheck(f"{column} contains a NUL byte", lambda s: ~s.str.contains(NUL_SENTINEL, regex=False).fillna(False)),
        ContractCheck(f"{column} contains a control character (tab, newline, ...)", _no_control_character),
        ContractCheck(
            f"{column} has leading or trailing whitespace (ids are kept exactly as read, never trimmed into "
            f"another id: trim them in the source)",
            lambda s: s.isna() | s.str.strip().eq(s),
        ),
        ContractCheck(f"{column} longer than {MAX_ID_LENGTH} characters", lambda s: s.isna() | s.str.len().le(MAX_ID_LENGTH)),
    )


def _flag(reason: str) -> ContractColumn:
    """A boolean column _parse computes (e.g. price_is_number): False fails with `reason`."""
    return ContractColumn(bool, False, (ContractCheck(reason, lambda s: s),))


@lru_cache(maxsize=8)
def contract_checks(min_timestamp: str, max_timestamp: str) -> dict[str, ContractColumn]:
    """The event contract of DESIGN.md over parsed columns (see `_parse`): column -> dtype, nullability, checks.

    `contract_schema` gives the same rules as a pandera schema; ingest runs the check functions directly
    (`failed_checks`), which needs no pandera import (~0.25 s per process)."""
    lo, hi = pd.Timestamp(min_timestamp, tz="UTC"), pd.Timestamp(max_timestamp, tz="UTC")
    text = TEXT
    return {
        "user_id": ContractColumn(text, True, _id_checks("user_id", required=True)),
        "item_id": ContractColumn(text, True, _id_checks("item_id", required=True)),
        "session_id": ContractColumn(text, True, _id_checks("session_id", required=False)),
        "category": ContractColumn(text, True, _id_checks("category", required=False)),
        "event_type": ContractColumn(
            text, True, (ContractCheck(f"unknown event_type (expected one of {', '.join(EVENT_TYPES)})", lambda s: s.isin(EVENT_TYPES)),)
        ),
        "timestamp": ContractColumn(
            pd.DatetimeTZDtype("ns", "UTC"),
            True,
            (ContractCheck(f"timestamp outside [{min_timestamp}, {max_timestamp}]", lambda s: s.isna() | ((s >= lo) & (s <= hi))),),
        ),
        "timestamp_missing": ContractColumn(bool, False, (ContractCheck("missing timestamp", lambda s: ~s),)),
        "price": ContractColumn(
            np.dtype("float64"),
            True,
            (
                ContractCheck("negative price", lambda s: s.isna() | (s >= 0)),
                ContractCheck("infinite price", lambda s: ~s.isin([np.inf, -np.inf])),
            ),
        ),
        "price_is_number": _flag("price is not a number"),
        "quantity": ContractColumn(pd.Int64Dtype(), True, (ContractCheck("quantity < 1", lambda s: s.isna() | (s >= 1)),)),
        "quantity_is_number": _flag("quantity is not a number"),
        "quantity_is_integer": _flag("quantity is not an integer"),
        "quantity_in_range": _flag("quantity out of range (beyond 64-bit integers)"),
    }


def contract_schema(min_timestamp: str = "1990-01-01", max_timestamp: str = "2100-01-01") -> pa.DataFrameSchema:
    """The contract as a pandera schema over parsed columns: the same check functions as `contract_checks`, each
    named by its reject reason (`schema.validate(parsed, lazy=True)` reports them); for validating parsed frames
    elsewhere. tests/test_validation.py checks that it fails exactly the rows ingest rejects, for the same reasons."""
    import pandera.pandas as pa

    return pa.DataFrameSchema(
        {
            name: pa.Column(
                column.dtype,
                [pa.Check(check.fn, name=check.reason, ignore_na=False) for check in column.checks],
                nullable=column.nullable,
            )
            for name, column in contract_checks(min_timestamp, max_timestamp).items()
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
        problem = problem.mask(problem.eq("").fillna(False))  # empty text is no problem: a missing time is then "missing"
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


def failed_checks(parsed: pd.DataFrame, contract: dict[str, ContractColumn], source: str) -> Iterator[tuple[str, np.ndarray]]:
    """(reason, rows that fail it) for every check of the contract that some row fails.

    Each check's vectorised function runs on its whole column rather than through pandera's `schema.validate`:
    with a million failing rows pandera's error report costs ~30 s and ~600 MB per chunk, and only the boolean
    outcome of each check is needed. A wrong dtype or a check that does not give one boolean per row is a bug,
    and fails loudly rather than letting rows through.
    """
    for name, column in contract.items():
        values = parsed[name]
        if values.dtype != column.dtype:
            raise ContractError(f"{source}: column {name} is {values.dtype}, the contract expects {column.dtype}. This is a shopsight bug.")
        for check in column.checks:
            try:
                outcome = check.fn(values)
            except Exception as exc:  # noqa: BLE001 - any failure of a check must stop the ingest
                raise ContractError(f"{source}: the event contract could not be checked ({check.reason}: {exc!r}). This is a shopsight bug.") from exc
            if not isinstance(outcome, pd.Series) or len(outcome) != len(values) or not pd.api.types.is_bool_dtype(outcome.dtype):
                raise ContractError(f"{source}: the event contract could not be checked ({check.reason} gave no verdict per row). This is a shopsight bug.")
            # a numpy boolean verdict holds no NA: no fillna (a copy of the column per check)
            passed = outcome.to_numpy() if outcome.dtype == np.bool_ else outcome.fillna(False).to_numpy(dtype=bool)
            failed = ~passed
            if failed.any():
                yield check.reason, np.flatnonzero(failed)


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
    reasons, bad = _reasons(problem, failed_checks(parsed, contract_checks(min_timestamp, max_timestamp), source))
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
    rejects = (frame if bad.all() else frame.loc[bad]).drop(columns=[TIMESTAMP_PROBLEM], errors="ignore")
    rejects = pd.DataFrame({col: _as_text(rejects[col]) for col in rejects.columns})
    rejects["reason"] = pd.arrays.ArrowStringArray(reasons)
    rejects["source"] = source
    return valid.reset_index(drop=True), rejects.reset_index(drop=True)


def _reasons(problem: pd.Series, failures: Iterator[tuple[str, np.ndarray]]) -> tuple[pa_arrow.Array, np.ndarray]:
    """(each failing row's reasons, '; '-joined: the adapter's problem first, then the failed checks in contract order;
    which rows fail). A row's failures are a bit pattern (bit k: the k-th failing check) next to its problem's code; the
    text is built once per distinct pattern and taken for every row: rows fail in a few ways, and joining strings per row
    cost ~0.5 us a row."""
    codes, problems = pd.factorize(problem, use_na_sentinel=True)  # no problem: -1
    pattern = np.zeros(len(problem), dtype=np.int64)
    names: list[str] = []
    for bit, (reason, failed) in enumerate(failures):
        if bit >= 31:  # the contract has 28 checks; 31 bits times the problems' codes stay far inside int64
            raise ContractError(f"more than 31 contract checks failed in one chunk ({reason}). This is a shopsight bug.")
        pattern[failed] |= np.int64(1) << bit
        names.append(reason)
    key = pattern * (len(problems) + 1) + (codes + 1)
    bad = key != 0
    distinct, inverse = np.unique(key[bad], return_inverse=True)
    texts = []
    for value in distinct.tolist():
        bits, code = divmod(value, len(problems) + 1)
        parts = [str(problems[code - 1])] if code else []
        parts += [name for k, name in enumerate(names) if bits >> k & 1]
        texts.append("; ".join(parts))
    reasons = pa_arrow.array(texts, type=pa_arrow.large_string()).take(pa_arrow.array(inverse))
    return reasons, bad


def _matches(values: pa_arrow.ChunkedArray, pattern: str) -> np.ndarray:
    return pc.match_substring_regex(values, pattern).fill_null(False).to_numpy(zero_copy_only=False)


def _matches_where(values: pa_arrow.ChunkedArray, rows: np.ndarray, pattern: str) -> np.ndarray:
    """_matches, looking only at the rows `rows` (the others False): a regex costs more than the filter when few are left."""
    if rows.all():
        return _matches(values, pattern)
    out = np.zeros(len(rows), dtype=bool)
    out[rows] = _matches(values.filter(pa_arrow.array(rows)), pattern)
    return out


def _only_bytes(values: pa_arrow.ChunkedArray, allowed: tuple[int, int]) -> bool:
    """Whether every byte of the column's text buffers lies in the range `allowed` (inclusive): then every value is
    made of such bytes alone and no regex needs to look (a buffer may hold bytes beyond the values: a false alarm
    only means the regex runs)."""
    low, high = allowed
    for chunk in values.chunks:
        data = chunk.buffers()[2]
        if data is not None and data.size:
            values_bytes = np.frombuffer(data, dtype=np.uint8)
            if values_bytes.min() < low or values_bytes.max() > high:
                return False
    return True


_ID_BYTES = (0x21, 0x7E)  # printable ASCII, no space
_DIGITS = (ord("0"), ord("9"))


def _plain_text(values: pa_arrow.ChunkedArray, pattern: str, allowed: tuple[int, int], max_length: int) -> np.ndarray:
    """Where the text matches `pattern`, which accepts exactly the values of 1..max_length bytes in `allowed`."""
    if _only_bytes(values, allowed):
        length = pc.binary_length(values).fill_null(0).to_numpy(zero_copy_only=False)
        return (length >= 1) & (length <= max_length)
    return _matches(values, pattern)


def _plain_digits(values: pa_arrow.ChunkedArray, max_length: int) -> np.ndarray:
    """Where the text is 1..max_length ASCII digits (_PLAIN_QUANTITY): Arrow's ASCII class kernel where some value holds
    another byte (a regex over every row costs ~10x more)."""
    if _only_bytes(values, _DIGITS):
        length = pc.binary_length(values).fill_null(0).to_numpy(zero_copy_only=False)
        return (length >= 1) & (length <= max_length)
    digits = pc.ascii_is_decimal(values).fill_null(False).to_numpy(zero_copy_only=False)
    return digits & (pc.binary_length(values).fill_null(0).to_numpy(zero_copy_only=False) <= max_length)


_MAX_FAILED_CASTS = 64  # then the rest of a shape that has many unreadable rows goes the full way


def _parse_where(values: pa_arrow.ChunkedArray, rows: np.ndarray, arrow_type: pa_arrow.DataType) -> np.ndarray:
    """Arrow's cast of the rows `rows` of `values`, as numpy over all rows (only `rows` meaningful), and `rows` with the
    rows that do not convert (e.g. February 30th) taken out, in place. A cast fails whole on one such row: the rows are
    halved until each failing one is alone (at most _MAX_FAILED_CASTS failed casts, then the rest is taken out too)."""
    out = np.zeros(len(rows), dtype=arrow_type.to_pandas_dtype() if not pa_arrow.types.is_timestamp(arrow_type) else "datetime64[ns]")
    if not rows.any():
        return out
    try:  # the usual case: every row converts (a filter, cheaper than a take)
        out[rows] = pc.cast(values if rows.all() else values.filter(pa_arrow.array(rows)), arrow_type).to_numpy(zero_copy_only=False)
        return out
    except (pa_arrow.ArrowInvalid, pa_arrow.ArrowNotImplementedError):
        pass
    pending = [np.flatnonzero(rows)]
    failures = 0
    while pending:
        positions = pending.pop()
        try:
            out[positions] = pc.cast(values.take(pa_arrow.array(positions)), arrow_type).to_numpy(zero_copy_only=False)
        except (pa_arrow.ArrowInvalid, pa_arrow.ArrowNotImplementedError):
            failures += 1
            if len(positions) == 1 or failures > _MAX_FAILED_CASTS:
                rows[positions] = False
            else:
                pending += [positions[: len(positions) // 2], positions[len(positions) // 2 :]]
    return out


def _is_text(values: pa_arrow.ChunkedArray | None) -> bool:
    return values is not None and (pa_arrow.types.is_string(values.type) or pa_arrow.types.is_large_string(values.type))


def _plain_timestamps(stamps: pa_arrow.ChunkedArray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(UTC nanoseconds, which rows were read) among `candidates`: ISO 8601 text of the shapes Arrow reads (naive =
    UTC), or Parquet datetimes (naive = UTC) that nanoseconds hold. Other rows are left to the full path."""
    n = len(candidates)
    nanos = np.zeros(n, dtype="int64")
    read = np.zeros(n, dtype=bool)
    if pa_arrow.types.is_timestamp(stamps.type):
        present = candidates & stamps.is_valid().to_numpy(zero_copy_only=False)
        nanos[present] = _parse_where(stamps, present, pa_arrow.timestamp("ns", tz=stamps.type.tz))[present].view("int64")
        return nanos, present
    if not _is_text(stamps):
        return nanos, read
    for pattern, arrow_type in ((ISO_ZONED, pa_arrow.timestamp("ns", tz="UTC")), (ISO_NAIVE, pa_arrow.timestamp("ns"))):
        rows = candidates & ~read
        if not rows.any():
            break
        rows &= _matches_where(stamps, rows, pattern)
        parsed = _parse_where(stamps, rows, arrow_type)  # the rows that do not convert go the full way, which says why
        nanos[rows] = parsed[rows].view("int64")
        read |= rows
    return nanos, read


def split_plain_rows(chunk: RawChunk, *, min_timestamp: str = "1990-01-01", max_timestamp: str = "2100-01-01") -> tuple[pa_arrow.Table, np.ndarray]:
    """(canonical Arrow rows, which rows) for the rows of a raw chunk that are valid in the plainest way.

    A row is plain when its ids are printable ASCII without spaces (at most MAX_ID_LENGTH), its event is a key of
    the event map, its timestamp ISO 8601 of the shapes Arrow's parser reads (ISO_ZONED, ISO_NAIVE as UTC) or a
    Parquet datetime, within [min_timestamp, max_timestamp], its price missing or digits with an optional fraction
    (or a finite number >= 0), its quantity missing or digits (or an integer) >= 1. Every check of the contract passes for such a row by construction, and its values are those the
    full path (the adapter's `canonical`, then validate_events) gives: that path's own fast paths read these shapes
    with the same Arrow casts (and where one unreadable row, such as a February 30th, sends a whole shape of a chunk
    to pandas there, pandas reads these shapes to the same instant). Every other row takes the full path, which may
    still accept it and otherwise gives the reasons. tests/test_validation.py checks that the two agree row for row.
    """
    n = len(chunk)
    ok = np.ones(n, dtype=bool)
    ids = {}
    for name, required in (("user_id", True), ("item_id", True), ("session_id", False), ("category", False)):
        values = chunk.column(name)
        ids[name] = values
        if values is None:
            ok &= not required
        elif not _is_text(values):  # e.g. numeric ids of a Parquet file: the adapter's to_id decides
            ok &= not required and values.null_count == n
            ids[name] = None
        else:
            plain = _plain_text(values, _PLAIN_ID, _ID_BYTES, MAX_ID_LENGTH)
            ok &= plain if required else plain | values.is_null().to_numpy(zero_copy_only=False)
    if chunk.event_constant is not None:
        events = None
    else:
        mapping = {key: value for key, value in chunk.event_map.items() if isinstance(key, str)}
        raw_events = chunk.column("event_type")
        if _is_text(raw_events):
            events = pc.index_in(raw_events, value_set=pa_arrow.array(list(mapping), pa_arrow.string()))
            ok &= events.is_valid().to_numpy(zero_copy_only=False)
        else:
            events = pa_arrow.nulls(n, pa_arrow.int32())
            ok[:] = False
        names = pa_arrow.array(list(mapping.values()), pa_arrow.string())
    nanos, read = _plain_timestamps(chunk.column("timestamp"), ok)
    low, high = pd.Timestamp(min_timestamp, tz="UTC").value, pd.Timestamp(max_timestamp, tz="UTC").value
    ok &= read & (nanos >= low) & (nanos <= high)
    prices = np.full(n, np.nan)
    price = chunk.column("price")
    if price is not None and _is_text(price):
        number = _matches(price, _PLAIN_PRICE) & ok
        prices[number] = _parse_where(price, number, pa_arrow.float64())[number]
        ok &= number | price.is_null().to_numpy(zero_copy_only=False)
    elif price is not None and (pa_arrow.types.is_floating(price.type) or pa_arrow.types.is_integer(price.type)):
        prices = pc.cast(price, pa_arrow.float64()).to_numpy(zero_copy_only=False)  # null (and NaN): missing, as in pandas
        with np.errstate(invalid="ignore"):
            ok &= np.isnan(prices) | (np.isfinite(prices) & (prices >= 0))
    elif price is not None:
        ok[:] = False
    quantities = np.ones(n, dtype="int64")
    quantity = chunk.column("quantity")
    if quantity is not None and _is_text(quantity):
        number = _plain_digits(quantity, 15) & ok
        quantities[number] = _parse_where(quantity, number, pa_arrow.int64())[number]
        ok &= number | quantity.is_null().to_numpy(zero_copy_only=False)
    elif quantity is not None and pa_arrow.types.is_integer(quantity.type):
        present = quantity.is_valid().to_numpy(zero_copy_only=False)
        read = present.copy()
        whole = _parse_where(quantity, read, pa_arrow.int64())  # an unsigned value beyond int64 drops out of `read`
        ok &= ~present | (read & (whole >= 1))
        quantities = np.where(read, whole, 1)
    elif quantity is not None:
        ok[:] = False
    ok &= quantities >= 1
    keep = pa_arrow.array(ok)

    def text(values: pa_arrow.ChunkedArray | None) -> pa_arrow.Array:
        return pa_arrow.nulls(int(ok.sum()), pa_arrow.string()) if values is None else values.filter(keep).cast(pa_arrow.string())

    if events is None:
        event_type = pa_arrow.array(np.full(int(ok.sum()), chunk.event_constant, dtype=object), pa_arrow.string())
    else:
        event_type = names.take(events.filter(keep))
    kept_prices = prices[ok]
    table = pa_arrow.table(
        {
            "user_id": text(ids["user_id"]),
            "item_id": text(ids["item_id"]),
            "event_type": event_type,
            "timestamp": pa_arrow.array(nanos[ok]).cast(pa_arrow.timestamp("ns", tz="UTC")),
            "session_id": text(ids["session_id"]),
            "category": text(ids["category"]),
            "price": pa_arrow.array(kept_prices, mask=np.isnan(kept_prices)),
            "quantity": pa_arrow.array(quantities[ok]),
        },
        schema=CANONICAL_ARROW,
    )
    return table, ok


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
