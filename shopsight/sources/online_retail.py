"""UCI Online Retail (and Online Retail II) invoices, as CSV, .xlsx (as published) or Parquet.

Columns InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country
(Online Retail II names Invoice, Price and "Customer ID" are accepted too). One row is one
invoice line:

- a normal invoice line is a purchase of Quantity units of StockCode at UnitPrice;
- a cancellation (InvoiceNo starting with "C", negative Quantity) is the post-purchase
  equivalent of removing the item from the cart: event_type "remove_from_cart" with the
  quantity negated (so positive; a cancellation with a positive quantity becomes negative and
  is rejected);
- other negative quantities (damages, stock adjustments) and negative prices ("Adjust bad
  debt") stay negative and are rejected by the validator; a price of 0 (free items) is valid;
- an empty CustomerID gives user_id <NA> (rejected: guest checkouts cannot be followed);
  Excel's "17850.0" is read as "17850".

Ids are kept exactly as written (a StockCode with a trailing space is rejected, not merged into the
trimmed code). The invoice is the session (session_id = InvoiceNo). There is no category. InvoiceDate is
month/day/year ("12/1/2010 8:26"), falling back to ISO 8601 ("2010-12-01 08:26:00"); times are
UK local times, taken as UTC unless options timezone says otherwise.

A CSV's encoding is detected (encoding "auto", the default): UTF-8 when the whole file decodes as
UTF-8, else cp1252 (Windows/Excel exports), else Latin-1, so `Jörg` stays `Jörg`. A Parquet file
(recognised by its suffix or its magic bytes) is read column by column in row batches; raw_line is
then the 1-based row number.

options: timestamp_format, timezone ("UTC"), encoding ("auto"), sheet (.xlsx only).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shopsight.sources import SourceError
from shopsight.sources.canonical import (
    canonical_chunk,
    datetimes_to_utc,
    negate_number_text,
    number_text,
    parse_timestamps,
    to_id,
)
from shopsight.sources.reading import (
    AUTO_ENCODING,
    RAW_LINE,
    TEXT,
    check_options,
    check_parquet_types,
    delimiter_hint,
    is_parquet,
    iter_csv_chunks,
    read_header,
    resolve_paths,
    resolved_encoding,
)

KIND = "online_retail"
# canonical role -> accepted column names (Online Retail first, Online Retail II after).
COLUMN_NAMES = {
    "invoice": ("InvoiceNo", "Invoice"),
    "item": ("StockCode",),
    "quantity": ("Quantity",),
    "time": ("InvoiceDate",),
    "price": ("UnitPrice", "Price"),
    "customer": ("CustomerID", "Customer ID"),
}
TIME_FORMAT = "%m/%d/%Y %H:%M"
CANCELLATION_PREFIX = "C"
OPTIONS = ("timestamp_format", "timezone", "encoding", "sheet")
EXCEL_SUFFIXES = (".xlsx", ".xlsm")
PARQUET_SUFFIXES = (".parquet", ".pq")


def read_events(path: str | Path | list, *, chunksize: int, options: dict[str, Any]) -> Iterator[pd.DataFrame]:
    """Stream the invoice lines as canonical chunks."""
    check_options(KIND, options, OPTIONS)
    encoding = options.get("encoding", AUTO_ENCODING)
    files = resolve_paths(path, kind=KIND)
    plans = []
    for file in files:
        fmt = _format(file)
        file_encoding = None
        if fmt == "excel":
            header = _excel_header(file, options.get("sheet"))
        elif fmt == "parquet":
            header = _parquet_header(file)
        else:
            file_encoding = resolved_encoding(file, encoding)
            header = read_header(file, encoding=file_encoding)
        cols = _resolve_columns(file, header)
        if fmt == "parquet":
            check_parquet_types(file, pq.ParquetFile(file).schema_arrow, cols.values(), kind=KIND)
        plans.append((file, fmt, file_encoding, header, cols))
    return _generate(plans, chunksize, options)


def _arrow_text(arrow_type: pa.DataType):
    return TEXT if arrow_type in (pa.string(), pa.large_string()) else None


def _format(file: Path) -> str:
    suffix = file.suffix.lower()
    if suffix in EXCEL_SUFFIXES:
        return "excel"
    if suffix in PARQUET_SUFFIXES or is_parquet(file):
        return "parquet"
    return "csv"


def _parquet_header(file: Path) -> list[str]:
    try:
        return list(pq.ParquetFile(file).schema_arrow.names)
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{file}: not a readable Parquet file ({exc}). Fix: re-download or re-export it.") from None


def _iter_parquet_chunks(file: Path, columns: list[str], chunksize: int) -> Iterator[pd.DataFrame]:
    first_row = 1
    try:
        for batch in pq.ParquetFile(file).iter_batches(batch_size=chunksize, columns=columns):
            frame = batch.to_pandas(types_mapper=_arrow_text)
            frame[RAW_LINE] = range(first_row, first_row + len(frame))
            first_row += len(frame)
            yield frame
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{file}: unreadable near row {first_row} ({exc}). Fix: re-download or re-export the file.") from None


def _resolve_columns(file: Path, header: list[str]) -> dict[str, str]:
    resolved = {}
    for role, names in COLUMN_NAMES.items():
        found = next((name for name in names if name in header), None)
        if found is None:
            raise SourceError(
                f"{file}: missing column {names[0]!r} for data.source={KIND}; found {', '.join(header) or 'no columns'}. "
                f"Fix: use the original UCI export (InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,"
                f"CustomerID,Country), or data.source=generic with data.options.columns.{delimiter_hint(header)}"
            )
        resolved[role] = found
    return resolved


def _generate(plans: list, chunksize: int, options: dict[str, Any]) -> Iterator[pd.DataFrame]:
    for file, fmt, encoding, header, cols in plans:
        if fmt == "excel":
            chunks = _iter_excel_chunks(file, options.get("sheet"), chunksize)
        elif fmt == "parquet":
            chunks = _iter_parquet_chunks(file, list(dict.fromkeys(cols.values())), chunksize)
        else:
            chunks = iter_csv_chunks(
                file,
                columns=header,
                header_lines=1,
                chunksize=chunksize,
                usecols=list(cols.values()),
                encoding=encoding,
            )
        for raw in chunks:
            yield _to_canonical(raw, cols, options)


def _to_canonical(raw: pd.DataFrame, cols: dict[str, str], options: dict[str, Any]) -> pd.DataFrame:
    invoice = to_id(raw[cols["invoice"]])
    cancelled = invoice.str.startswith(CANCELLATION_PREFIX).fillna(False).astype(bool)
    quantity = number_text(raw[cols["quantity"]])
    if cancelled.any():
        quantity[cancelled] = negate_number_text(quantity[cancelled])
    event = pd.Series("purchase", index=raw.index, dtype=object).where(~cancelled, "remove_from_cart")
    # Excel and Parquet exports hold CustomerID as a float: "17850.0" is customer 17850.
    customer = to_id(raw[cols["customer"]])
    excel_float = customer.str.fullmatch(r"\d+\.0+").fillna(False).astype(bool)
    customer = customer.where(~excel_float, customer.str.replace(r"\.0+$", "", regex=True))
    return canonical_chunk(
        raw_line=raw[RAW_LINE],
        user_id=customer,
        item_id=to_id(raw[cols["item"]]),
        event_type=event,
        timestamp=_parse_invoice_dates(raw[cols["time"]], options),
        session_id=invoice,
        price=raw[cols["price"]],
        quantity=quantity,
    )


def _parse_invoice_dates(raw: pd.Series, options: dict[str, Any]) -> tuple[pd.Series, pd.Series]:
    """(UTC times, problem): month/day/year first, then ISO 8601 for what that format does not read."""
    timezone = options.get("timezone", "UTC")
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        return datetimes_to_utc(raw, timezone=timezone)
    return parse_timestamps(raw, options.get("timestamp_format") or (TIME_FORMAT, None), timezone=timezone)


def _load_workbook(file: Path):
    import openpyxl  # only .xlsx input needs it (a project dependency: the dataset is published as .xlsx)

    try:
        return openpyxl.load_workbook(file, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for a damaged workbook
        raise SourceError(f"{file}: cannot open the workbook ({exc}). Fix: re-export it or export it as CSV.") from None


def _sheet(workbook, file: Path, sheet: str | None):
    if sheet is None:
        return workbook.worksheets[0]
    if sheet not in workbook.sheetnames:
        raise SourceError(
            f"{file}: no sheet {sheet!r}; sheets are {', '.join(workbook.sheetnames)}. Fix: data.options.sheet in params.yaml."
        )
    return workbook[sheet]


def _excel_header(file: Path, sheet: str | None) -> list[str]:
    workbook = _load_workbook(file)
    try:
        first = next(_sheet(workbook, file, sheet).iter_rows(max_row=1, values_only=True), ())
        return ["" if v is None else str(v).strip() for v in first]
    finally:
        workbook.close()


def _iter_excel_chunks(file: Path, sheet: str | None, chunksize: int) -> Iterator[pd.DataFrame]:
    """Rows of the sheet as text (like a CSV export) in chunks; raw_line is the Excel row number."""
    workbook = _load_workbook(file)
    try:
        rows = _sheet(workbook, file, sheet).iter_rows(values_only=True)
        header = ["" if v is None else str(v).strip() for v in next(rows, ())]
        buffer: list[list[str | None]] = []
        row_number = 1
        for values in rows:
            row_number += 1
            text = [None if v is None or v == "" else str(v) for v in values[: len(header)]]
            buffer.append(text + [None] * (len(header) - len(text)))
            if len(buffer) == chunksize:
                yield _excel_frame(buffer, header, row_number)
                buffer = []
        if buffer:
            yield _excel_frame(buffer, header, row_number)
    finally:
        workbook.close()


def _excel_frame(buffer: list[list[str | None]], header: list[str], last_row: int) -> pd.DataFrame:
    frame = pd.DataFrame(buffer, columns=header, dtype=object)
    frame[RAW_LINE] = range(last_row - len(buffer) + 1, last_row + 1)
    return frame
