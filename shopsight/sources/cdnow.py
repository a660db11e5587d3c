"""CDNOW `CDNOW_master.txt` (Fader & Hardie's CD purchase panel).

Whitespace-separated `customer_id date(YYYYMMDD) number_of_cds dollar_value`, with or without a
header line. Every row is a purchase: quantity = number_of_cds, price = dollar_value /
number_of_cds (a unit price; a row with 0 CDs keeps quantity 0, which the validator rejects,
and has no price).

The data has no products, so item_id is the constant ITEM_PLACEHOLDER ("cdnow:any") and
source_info("cdnow").has_item_ids is False: user-level tasks (propensity, churn) and total
demand work; next-item recommendation has nothing to learn. Dates are days: the timestamp is
midnight UTC of that day. No sessions, no categories.

options: header (None = detect: the first line is a header only when it names these columns, e.g.
`customer_id date number_of_cds dollar_value`; any other first line is data), encoding.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shopsight.sources.canonical import canonical_chunk, number_text, parse_timestamps
from shopsight.sources.reading import (
    DEFAULT_ENCODING,
    RAW_LINE,
    TEXT,
    check_options,
    headerless_layout,
    iter_csv_chunks,
    resolve_paths,
)
from shopsight.validation import parse_price, parse_quantity

KIND = "cdnow"
ITEM_PLACEHOLDER = "cdnow:any"
COLUMNS = ["customer_id", "date", "number_of_cds", "dollar_value"]
DATE_FORMAT = "%Y%m%d"
OPTIONS = ("header", "encoding")
# accepted names of each column in a header line (compared without case or punctuation)
HEADER_NAMES = (
    ("customer_id", "customer", "id", "user_id"),
    ("date",),
    ("number_of_cds", "cds", "quantity", "qty"),
    ("dollar_value", "dollars", "amount", "value"),
)


def read_events(path: str | Path | list, *, chunksize: int, options: dict[str, Any]) -> Iterator[pd.DataFrame]:
    """Stream CDNOW_master.txt as canonical purchase chunks."""
    check_options(KIND, options, OPTIONS)
    encoding = options.get("encoding", DEFAULT_ENCODING)
    files = resolve_paths(path, kind=KIND)
    header_lines = headerless_layout(
        files, options, kind=KIND, columns=COLUMNS, original="CDNOW_master.txt", header_names=HEADER_NAMES, whitespace=True
    )
    return _generate(files, header_lines, chunksize, encoding)


def _generate(files: list[Path], header_lines: dict[Path, int], chunksize: int, encoding: str) -> Iterator[pd.DataFrame]:
    for file in files:
        for raw in iter_csv_chunks(
            file, columns=COLUMNS, header_lines=header_lines[file], chunksize=chunksize, encoding=encoding, sep=r"\s+"
        ):
            yield canonical_chunk(
                raw_line=raw[RAW_LINE],
                user_id=raw["customer_id"],
                item_id=ITEM_PLACEHOLDER,
                event_type="purchase",
                timestamp=parse_timestamps(raw["date"], DATE_FORMAT),
                price=unit_price_text(raw["dollar_value"], raw["number_of_cds"]),
                quantity=raw["number_of_cds"],
            )


def unit_price_text(dollars: pd.Series, cds: pd.Series) -> pd.Series:
    """dollar_value / number_of_cds as text for the validator. A dollar value that is not a number stays
    as written (rejected as "price is not a number"); with no usable CD count there is no unit price
    (the quantity is rejected)."""
    amount, amount_ok = parse_price(dollars)
    count, count_ok, count_whole, count_fits = parse_quantity(cds)
    usable = amount_ok & amount.notna() & count.notna() & (count != 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        unit = amount / count.astype("float64")
    text = number_text(unit.where(usable.fillna(False).astype(bool)))
    return text.mask(~amount_ok, dollars.astype(TEXT))
