"""REES46 "eCommerce behavior data from multi category store" monthly CSVs (2019-Oct.csv, ...).

Header `event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session`;
event_time like "2019-10-01 00:00:00 UTC"; event_type view / cart / remove_from_cart / purchase
(already canonical). category is category_code ("electronics.smartphone"), or category_id where the
code is empty; user_session is the session id. `path` may be a list of monthly files or a glob.

options: encoding.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from shopsight.schema import EVENT_TYPES
from shopsight.sources.canonical import canonical_chunk, map_event_types, parse_timestamps
from shopsight.sources.reading import (
    DEFAULT_ENCODING,
    RAW_LINE,
    TEXT,
    check_options,
    iter_csv_chunks,
    read_header,
    require_columns,
    resolve_paths,
)

KIND = "rees46"
EVENT_MAP = {name: name for name in EVENT_TYPES}
TIME_FORMAT = "%Y-%m-%d %H:%M:%S %Z"
REQUIRED = {
    "event_time": "event time",
    "event_type": "event name",
    "product_id": "item id",
    "user_id": "user id",
}
OPTIONAL = ("category_id", "category_code", "price", "user_session")
OPTIONS = ("encoding",)


def read_events(path: str | Path | list, *, chunksize: int, options: dict[str, Any]) -> Iterator[pd.DataFrame]:
    """Stream the monthly CSV(s) as canonical chunks; a chunk never spans two files."""
    check_options(KIND, options, OPTIONS)
    encoding = options.get("encoding", DEFAULT_ENCODING)
    files = resolve_paths(path, kind=KIND)
    headers = {}
    for file in files:
        headers[file] = read_header(file, encoding=encoding)
        require_columns(file, headers[file], REQUIRED, kind=KIND)
    return _generate(files, headers, chunksize, encoding)


def _generate(files: list[Path], headers: dict[Path, list[str]], chunksize: int, encoding: str) -> Iterator[pd.DataFrame]:
    for file in files:
        present = [c for c in OPTIONAL if c in headers[file]]
        for raw in iter_csv_chunks(
            file,
            columns=headers[file],
            header_lines=1,
            chunksize=chunksize,
            usecols=[*REQUIRED, *present],  # brand is not needed
            encoding=encoding,
        ):
            category = None
            if "category_code" in raw or "category_id" in raw:
                code = raw["category_code"] if "category_code" in raw else pd.Series(pd.NA, index=raw.index)
                fallback = raw["category_id"] if "category_id" in raw else pd.Series(pd.NA, index=raw.index)
                category = code.astype(TEXT).fillna(fallback.astype(TEXT))
            yield canonical_chunk(
                raw_line=raw[RAW_LINE],
                user_id=raw["user_id"],
                item_id=raw["product_id"],
                event_type=map_event_types(raw["event_type"], EVENT_MAP),
                timestamp=parse_timestamps(raw["event_time"], TIME_FORMAT),
                session_id=raw.get("user_session"),
                category=category,
                price=raw["price"] if "price" in raw else None,
            )
