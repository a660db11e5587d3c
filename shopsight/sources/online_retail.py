"""UCI Online Retail (and Online Retail II) invoices, as CSV or .xlsx (as published).

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

The invoice is the session (session_id = InvoiceNo). There is no category. InvoiceDate is
month/day/year ("12/1/2010 8:26"), falling back to ISO 8601 ("2010-12-01 08:26:00"); times are
UK local times, taken as UTC unless options timezone says otherwise.

options: timestamp_format, timezone ("UTC"), encoding, sheet (.xlsx only).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from shopsight.sources import SourceError
from shopsight.sources.canonical import canonical_chunk, parse_timestamps, to_float, to_quantity
from shopsight.sources.reading import (
    DEFAULT_ENCODING,
    RAW_LINE,
    check_options,
    iter_csv_chunks,
    read_header,
    resolve_paths,
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


def read_events(path: str | Path | list, *, chunksize: int, options: dict[str, Any]) -> Iterator[pd.DataFrame]:
    """Stream the invoice lines as canonical chunks."""
    check_options(KIND, options, OPTIONS)
    encoding = options.get("encoding", DEFAULT_ENCODING)
    files = resolve_paths(path, kind=KIND)
    plans = []
    for file in files:
        if file.suffix.lower() in EXCEL_SUFFIXES:
            header = _excel_header(file, options.get("sheet"))
        else:
            header = read_header(file, encoding=encoding, encoding_errors="replace")
        plans.append((file, header, _resolve_columns(file, header)))
    return _generate(plans, chunksize, encoding, options)


def _resolve_columns(file: Path, header: list[str]) -> dict[str, str]:
    resolved = {}
    for role, names in COLUMN_NAMES.items():
        found = next((name for name in names if name in header), None)
        if found is None:
            raise SourceError(
                f"{file}: missing column {names[0]!r} for data.source={KIND}; found {', '.join(header) or 'no columns'}. "
                f"Fix: use the original UCI export (InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,"
                f"CustomerID,Country), or data.source=generic with data.options.columns."
            )
        resolved[role] = found
    return resolved


def _generate(plans: list, chunksize: int, encoding: str, options: dict[str, Any]) -> Iterator[pd.DataFrame]:
    for file, header, cols in plans:
        if file.suffix.lower() in EXCEL_SUFFIXES:
            chunks = _iter_excel_chunks(file, options.get("sheet"), chunksize)
        else:
            chunks = iter_csv_chunks(
                file,
                columns=header,
                header_lines=1,
                chunksize=chunksize,
                usecols=list(cols.values()),
                encoding=encoding,
                # Only Description (unused) holds non-ASCII text, and exports differ (UTF-8, Latin-1).
                encoding_errors="replace",
            )
        for raw in chunks:
            yield _to_canonical(raw, cols, options)


def _to_canonical(raw: pd.DataFrame, cols: dict[str, str], options: dict[str, Any]) -> pd.DataFrame:
    invoice = raw[cols["invoice"]].astype("string").str.strip()
    cancelled = invoice.str.startswith(CANCELLATION_PREFIX).fillna(False).astype(bool)
    quantity = to_quantity(raw[cols["quantity"]])
    quantity = quantity.where(~cancelled, -quantity)
    event = pd.Series("purchase", index=raw.index, dtype=object).where(~cancelled, "remove_from_cart")
    customer = raw[cols["customer"]].astype("string").str.strip().str.replace(r"^(\d+)\.0+$", r"\1", regex=True)
    return canonical_chunk(
        raw_line=raw[RAW_LINE],
        user_id=customer,
        item_id=raw[cols["item"]].astype("string").str.strip(),
        event_type=event,
        timestamp=_parse_invoice_dates(raw[cols["time"]], options),
        session_id=invoice,
        price=to_float(raw[cols["price"]]),
        quantity=quantity,
    )


def _parse_invoice_dates(raw: pd.Series, options: dict[str, Any]) -> pd.Series:
    timezone = options.get("timezone", "UTC")
    if options.get("timestamp_format"):
        return parse_timestamps(raw, options["timestamp_format"], timezone=timezone)
    parsed = parse_timestamps(raw, TIME_FORMAT, timezone=timezone)
    retry = parsed.isna() & raw.notna()
    if retry.any():
        parsed[retry] = parse_timestamps(raw[retry], None, timezone=timezone)
    return parsed


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
