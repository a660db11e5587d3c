"""Any CSV or Parquet event log, mapped to the canonical columns by options in params.yaml.

options:
- columns: {canonical_name: source_column}. Unmapped canonical columns default to a source
  column of the same name; user_id, item_id, event_type and timestamp must resolve, the others
  are <NA> when absent. With csv.header null, source columns are positions (0, 1, ...).
- event_type_constant: one canonical event for every row (e.g. purchase for an orders table that has
  no event column); the event_type column is then not read and may not be mapped.
- event_map: {source_value: canonical_event}. Values not in it that are already canonical event
  names pass through; others become "unknown:<raw>" (rejected by the validator).
- timestamp_format: a strftime format, "unix_s" or "unix_ms"; default ISO 8601 (native
  Parquet timestamps need none).
- timezone: zone of timestamps without an offset (default "UTC").
- csv: pandas.read_csv keyword arguments (sep, header, names, skiprows as an int, quotechar,
  encoding, ...); the reader itself sets dtype, chunksize, na handling and compression. encoding
  "auto" reads UTF-8 when the whole file is UTF-8, else cp1252/Latin-1.
- format: "csv" or "parquet" (default: Parquet when the suffix or the file's magic bytes say so).
  A CSV may be compressed (.gz, .bz2, .xz, .zip, recognised by magic bytes).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shopsight.schema import CANONICAL_COLUMNS, EVENT_TYPES, REQUIRED_COLUMNS
from shopsight.sources import SourceError
from shopsight.sources.canonical import (
    RawChunk,
    canonical_chunk,
    datetimes_to_utc,
    epoch_to_utc,
    map_event_types,
    parse_timestamps,
    to_id,
)
from shopsight.sources.reading import (
    DEFAULT_ENCODING,
    RAW_LINE,
    TEXT,
    check_options,
    check_parquet_types,
    delimiter_hint,
    is_parquet,
    iter_csv_chunks,
    read_header,
    resolve_paths,
)

KIND = "generic"
RAW_CHUNKS = True  # read_events(raw=True) yields RawChunks (see shopsight.sources.read_source)
OPTIONS = ("columns", "event_map", "event_type_constant", "timestamp_format", "timezone", "csv", "format")
PARQUET_SUFFIXES = (".parquet", ".pq")
# read_csv arguments the chunked reader owns (line numbers, dtypes and NA handling depend on them).
RESERVED_CSV_KWARGS = ("chunksize", "iterator", "dtype", "usecols", "nrows", "keep_default_na", "na_values",
                       "skip_blank_lines", "index_col", "converters", "parse_dates", "compression")
EPOCH_FORMATS = {"unix_s": "s", "unix_ms": "ms"}


def read_events(path: str | Path | list, *, chunksize: int, options: dict[str, Any], raw: bool = False) -> Iterator[pd.DataFrame | RawChunk]:
    """Stream CSV/Parquet file(s) as canonical chunks, following the column mapping in `options`.

    With `raw`, files whose times are ISO 8601 text or Parquet datetimes, naive ones in UTC (no timestamp_format, no
    timezone), come as RawChunks: the ingest checks and converts their plain rows in Arrow kernels and only the
    others through pandas."""
    check_options(KIND, options, OPTIONS)
    mapping = _column_mapping(options.get("columns") or {})
    constant = options.get("event_type_constant")
    if constant is not None:
        if constant not in EVENT_TYPES:
            raise SourceError(
                f"data.options.event_type_constant must be one of {', '.join(EVENT_TYPES)}, got {constant!r}. "
                f"Fix: correct it in params.yaml."
            )
        if "event_type" in (options.get("columns") or {}) or options.get("event_map"):
            raise SourceError(
                "data.options.event_type_constant gives every row the same event, so columns.event_type and "
                "event_map would be ignored. Fix: remove one or the other from params.yaml."
            )
        mapping["event_type"] = None
    event_map = _event_map(options.get("event_map") or {})
    csv_kwargs = dict(options.get("csv") or {})
    bad = sorted(set(csv_kwargs) & set(RESERVED_CSV_KWARGS))
    if bad:
        raise SourceError(
            f"data.options.csv may not set {', '.join(bad)}: the chunked reader sets it. Fix: remove it from params.yaml."
        )
    files = resolve_paths(path, kind=KIND)
    plans = []
    for file in files:
        fmt = options.get("format") or ("parquet" if file.suffix.lower() in PARQUET_SUFFIXES or is_parquet(file) else "csv")
        if fmt not in ("csv", "parquet"):
            raise SourceError(f"format must be 'csv' or 'parquet', got {fmt!r}. Fix: data.options.format in params.yaml.")
        if fmt == "parquet":
            header, header_lines = _parquet_columns(file), 0
        else:
            header, header_lines = _csv_layout(file, csv_kwargs)
        cols = _resolve(file, header, mapping)
        if fmt == "parquet":
            check_parquet_types(file, pq.ParquetFile(file).schema_arrow, [c for c in cols.values() if c is not None], kind=KIND)
        plans.append((file, fmt, header, header_lines, cols))
    return _generate(plans, chunksize, csv_kwargs, event_map, options, raw=raw)


def _column_mapping(columns: dict) -> dict[str, Any]:
    unknown = sorted(set(columns) - set(CANONICAL_COLUMNS))
    if unknown:
        raise SourceError(
            f"data.options.columns has unknown canonical name(s) {', '.join(map(str, unknown))}; "
            f"use {', '.join(CANONICAL_COLUMNS)}. Fix: correct data.options.columns in params.yaml."
        )
    return {name: columns.get(name, name) for name in CANONICAL_COLUMNS}


def _event_map(event_map: dict) -> dict[str, str]:
    wrong = {k: v for k, v in event_map.items() if v not in EVENT_TYPES}
    if wrong:
        raise SourceError(
            f"data.options.event_map maps to non-canonical event(s) {wrong}; use {', '.join(EVENT_TYPES)}. "
            f"Fix: correct data.options.event_map in params.yaml."
        )
    # YAML may give numeric codes as ints; the raw values are compared as text.
    return {**{name: name for name in EVENT_TYPES}, **{str(k): v for k, v in event_map.items()}}


def _parquet_columns(file: Path) -> list[str]:
    try:
        return list(pq.ParquetFile(file).schema_arrow.names)
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{file}: not a readable Parquet file ({exc}). Fix: check the file or set data.options.format.") from None


def _csv_layout(file: Path, csv_kwargs: dict[str, Any]) -> tuple[list, int]:
    """Column labels and the number of lines before the first data row."""
    skiprows = csv_kwargs.get("skiprows", 0) or 0
    if not isinstance(skiprows, int):
        raise SourceError(f"data.options.csv.skiprows must be an integer (line numbers depend on it), got {skiprows!r}.")
    header_row = csv_kwargs.get("header", "infer")
    if header_row == "infer":
        header_row = None if csv_kwargs.get("names") is not None else 0
    if header_row is not None and not isinstance(header_row, int):
        raise SourceError(f"data.options.csv.header must be a row number or null, got {header_row!r}.")
    kwargs = {k: v for k, v in csv_kwargs.items() if k not in ("encoding", "encoding_errors")}
    encoding = csv_kwargs.get("encoding", DEFAULT_ENCODING)
    labels = read_header(file, encoding=encoding, header_row=header_row, **kwargs)
    if header_row is None and csv_kwargs.get("names") is None:
        labels = [str(i) for i in range(len(labels))]  # headerless: columns are positions "0", "1", ...
    header_lines = skiprows + (0 if header_row is None else header_row + 1)
    return labels, header_lines


def _resolve(file: Path, header: list, mapping: dict[str, Any]) -> dict[str, Any]:
    """canonical name -> source column label, None for an absent optional column."""
    by_text = {str(label): label for label in header}
    resolved: dict[str, Any] = {}
    for name, source in mapping.items():
        if source is None:  # event_type_constant: no column
            resolved[name] = None
            continue
        label = by_text.get(str(source))
        if label is None and name in REQUIRED_COLUMNS:
            raise SourceError(
                f"{file}: column {source!r} for {name} is missing; found {', '.join(map(str, header)) or 'no columns'}."
                f"{delimiter_hint(header)} Fix: set data.options.columns.{name} in params.yaml to the column that holds it"
                + (" (or data.options.event_type_constant for a table of one kind of event)." if name == "event_type" else ".")
            )
        if label is None and source != name:
            raise SourceError(
                f"{file}: column {source!r} mapped to {name} is missing; found {', '.join(map(str, header))}. "
                f"Fix: correct or remove data.options.columns.{name} in params.yaml."
            )
        resolved[name] = label
    return resolved


def _generate(plans: list, chunksize: int, csv_kwargs: dict, event_map: dict, options: dict, *, raw: bool) -> Iterator[pd.DataFrame | RawChunk]:
    # split_plain_rows reads text times as ISO 8601 and naive ones as UTC: with another format or zone every row takes
    # the adapter's own conversion
    iso_in_utc = options.get("timestamp_format") is None and options.get("timezone", "UTC") == "UTC"
    for file, fmt, header, header_lines, cols in plans:
        used = list(dict.fromkeys(label for label in cols.values() if label is not None))
        if fmt == "parquet":
            chunks = _iter_parquet_chunks(file, used, chunksize)
        else:
            kwargs = {k: v for k, v in csv_kwargs.items() if k not in ("header", "names", "skiprows")}
            kwargs.setdefault("encoding", DEFAULT_ENCODING)
            chunks = iter_csv_chunks(file, columns=header, header_lines=header_lines, chunksize=chunksize, usecols=used, **kwargs)
        for frame in chunks:
            if raw and iso_in_utc:
                stamps = frame[cols["timestamp"]]
                if not pd.api.types.is_datetime64_any_dtype(stamps.dtype):
                    _refuse_epoch_numbers(stamps, options, file)  # decided on the whole chunk, as _timestamps does
                yield RawChunk(raw=frame, columns=cols, event_map=event_map, event_constant=options.get("event_type_constant"),
                               convert=partial(_to_canonical, cols=cols, event_map=event_map, options=options, file=file, numbers_checked=True))
            else:
                yield _to_canonical(frame, cols, event_map, options, file)


def _iter_parquet_chunks(file: Path, columns: list[str], chunksize: int) -> Iterator[pd.DataFrame]:
    first_row = 1
    try:
        for batch in pq.ParquetFile(file).iter_batches(batch_size=chunksize, columns=columns):
            frame = batch.to_pandas(types_mapper=lambda t: TEXT if t in (pa.string(), pa.large_string()) else None)
            frame[RAW_LINE] = range(first_row, first_row + len(frame))
            first_row += len(frame)
            yield frame
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{file}: unreadable near row {first_row} ({exc}). Fix: repair or re-export the file.") from None


def _to_canonical(raw: pd.DataFrame, cols: dict[str, Any], event_map: dict, options: dict, file: Path, numbers_checked: bool = False) -> pd.DataFrame:
    def get(name: str) -> pd.Series | None:
        return None if cols[name] is None else raw[cols[name]]

    events = get("event_type")
    if events is None:
        event_type = options["event_type_constant"]
    else:
        event_type = map_event_types(events.astype(TEXT), event_map)
    return canonical_chunk(
        raw_line=raw[RAW_LINE],
        user_id=to_id(get("user_id")),
        item_id=to_id(get("item_id")),
        event_type=event_type,
        timestamp=_timestamps(get("timestamp"), options, file, numbers_checked=numbers_checked),
        session_id=None if get("session_id") is None else to_id(get("session_id")),
        category=None if get("category") is None else to_id(get("category")),
        price=get("price"),
        quantity=get("quantity"),
    )


def _timestamps(raw: pd.Series, options: dict, file: Path, numbers_checked: bool = False) -> tuple[pd.Series, pd.Series]:
    """`numbers_checked`: these are some rows of a chunk whose whole column _refuse_epoch_numbers passed."""
    fmt = options.get("timestamp_format")
    timezone = options.get("timezone", "UTC")
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        return datetimes_to_utc(raw, timezone=timezone)
    if fmt in EPOCH_FORMATS:
        return epoch_to_utc(raw, EPOCH_FORMATS[fmt])
    if not numbers_checked:
        _refuse_epoch_numbers(raw, options, file)
    return parse_timestamps(raw, fmt, timezone=timezone)


def _refuse_epoch_numbers(raw: pd.Series, options: dict, file: Path) -> None:
    looks_numeric = pd.api.types.is_numeric_dtype(raw.dtype) or (options.get("timestamp_format") is None and _all_numbers(raw))
    if looks_numeric:
        # Guessing seconds vs milliseconds would silently shift every event; ask instead.
        raise SourceError(
            f"{file}: timestamp column {raw.name!r} holds numbers, not dates. "
            f"Fix: set data.options.timestamp_format to unix_s or unix_ms in params.yaml."
        )


_NUMERIC_STAMP = r"\s*-?\d+(\.\d*)?\s*"


def _all_numbers(raw: pd.Series) -> bool:
    """Whether every present value is a plain number (and one is present): a column of epoch times.

    Arrow's RE2 answers for the whole column at once; its ASCII classes match a subset of what Python's
    Unicode ones do, so a value RE2 rejects is looked at again in Python (the first that Python rejects too
    settles it: typically the first one)."""
    first = raw.first_valid_index()
    if first is None:
        return False
    pattern = re.compile(_NUMERIC_STAMP)
    if not pattern.fullmatch(str(raw[first])):
        return False  # a column of dates: its first value settles it
    present = raw.dropna()
    text = present if isinstance(present.dtype, pd.StringDtype) else present.astype(str)
    matched = pc.match_substring_regex(pa.array(text.astype(TEXT).array), f"^(?:{_NUMERIC_STAMP})$")
    missed = ~matched.to_numpy(zero_copy_only=False)
    return all(pattern.fullmatch(str(value)) for value in text[missed])
