"""Taobao `UserBehavior.csv` (Alibaba user behaviour data, Tianchi).

No header: `user_id,item_id,category_id,behavior_type,timestamp`, timestamp in unix seconds,
behavior_type pv / cart / fav / buy. Some timestamps fall outside the documented
2017-11-25..2017-12-03 window; they are kept for the validator's time-range check.
No sessions, prices or quantities.

options: header (None = detect: the first line is a header only when it names these columns, e.g.
`user_id,item_id,category_id,behavior_type,timestamp`; any other first line is data, so a damaged
first row is rejected with its reason, never skipped), encoding. The file may be gzip-compressed
(`UserBehavior.csv.gz`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from shopsight.sources.canonical import canonical_chunk, epoch_to_utc, map_event_types
from shopsight.sources.reading import (
    DEFAULT_ENCODING,
    RAW_LINE,
    check_options,
    headerless_layout,
    iter_csv_chunks,
    resolve_paths,
)

KIND = "taobao"
COLUMNS = ["user_id", "item_id", "category_id", "behavior_type", "timestamp"]
EVENT_MAP = {"pv": "view", "cart": "cart", "fav": "favorite", "buy": "purchase"}
OPTIONS = ("header", "encoding")
# accepted names of each column in a header line (compared without case or punctuation)
HEADER_NAMES = (
    ("user_id", "user"),
    ("item_id", "item"),
    ("category_id", "category", "cat_id"),
    ("behavior_type", "behavior", "behaviour_type", "behaviour", "type", "event"),
    ("timestamp", "ts", "time", "unix_seconds"),
)


def read_events(path: str | Path | list, *, chunksize: int, options: dict[str, Any]) -> Iterator[pd.DataFrame]:
    """Stream UserBehavior.csv as canonical chunks."""
    check_options(KIND, options, OPTIONS)
    encoding = options.get("encoding", DEFAULT_ENCODING)
    files = resolve_paths(path, kind=KIND)
    header_lines = headerless_layout(
        files, options, kind=KIND, columns=COLUMNS, original="UserBehavior.csv", header_names=HEADER_NAMES
    )
    return _generate(files, header_lines, chunksize, encoding)


def _generate(files: list[Path], header_lines: dict[Path, int], chunksize: int, encoding: str) -> Iterator[pd.DataFrame]:
    for file in files:
        for raw in iter_csv_chunks(
            file, columns=COLUMNS, header_lines=header_lines[file], chunksize=chunksize, encoding=encoding
        ):
            yield canonical_chunk(
                raw_line=raw[RAW_LINE],
                user_id=raw["user_id"],
                item_id=raw["item_id"],
                event_type=map_event_types(raw["behavior_type"], EVENT_MAP),
                timestamp=epoch_to_utc(raw["timestamp"], "s"),
                category=raw["category_id"],
            )
