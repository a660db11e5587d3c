"""Item sequences as text: one line per user, `user_id item_id item_id ...`, items in time order, no timestamps.

The exchange format of RecBole and of most sequential-recommendation papers (SASRec, S3-Rec, ICLRec: the Amazon
review sequences in ../shared/realdata/amazon/). Fields are separated by whitespace; ids are read as text.

There are no timestamps, so they are made: the items of a line are one day apart and END-ALIGNED (every user's
last item at `end_date`, the one before a day earlier, ...). With that, the project's time split with a one-day
horizon is the leave-one-out protocol of the papers (last item test, second to last validation), and
`recommender.protocol: leave_one_out` uses the order alone.

Event type: `purchase` by default (option `event_type`, purchase | view). A review sequence is a record of
bought items (a review follows a purchase), and `purchase` lets the recommender's "exclude what the user
bought" rule remove a user's earlier items, which is the standard protocol; use `view` for click sequences.

No sessions (the ingest derives them), prices, quantities or categories. A line with a user and no item gives
no event; a blank line none. `raw_line` is the line of the file (several events share it).

options: event_type (purchase | view), end_date (ISO date of every user's last item, default 2020-01-01),
encoding. The file may be compressed (gzip, bzip2, xz, zip).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shopsight.sources import SourceError
from shopsight.sources.canonical import canonical_chunk
from shopsight.sources.reading import DEFAULT_ENCODING, STREAM_ERRORS, check_options, open_text, resolve_paths

KIND = "sequence_text"
OPTIONS = ("event_type", "end_date", "encoding")
EVENT_TYPES = ("purchase", "view")
DEFAULT_END = "2020-01-01"
DAY_NS = 86_400 * 1_000_000_000


def read_events(path: str | Path | list, *, chunksize: int, options: dict[str, Any]) -> Iterator[pd.DataFrame]:
    """Stream the sequence file(s) as canonical chunks (at most `chunksize` events each, never two files)."""
    check_options(KIND, options, OPTIONS)
    event_type = options.get("event_type", "purchase")
    if event_type not in EVENT_TYPES:
        raise SourceError(f"data.options.event_type={event_type!r} for {KIND}: use one of {', '.join(EVENT_TYPES)}. "
                          "Fix: set it in params.yaml (purchase for review or order sequences, view for clicks).")
    try:
        end = pd.Timestamp(options.get("end_date", DEFAULT_END), tz="UTC").normalize()
    except (ValueError, TypeError):
        raise SourceError(f"data.options.end_date={options.get('end_date')!r} for {KIND} is not a date. "
                          "Fix: give an ISO date such as 2020-01-01.") from None
    encoding = options.get("encoding", DEFAULT_ENCODING)
    files = resolve_paths(path, kind=KIND)
    return _generate(files, chunksize, event_type, end, encoding)


def _generate(files: list[Path], chunksize: int, event_type: str, end: pd.Timestamp, encoding: str) -> Iterator[pd.DataFrame]:
    for file in files:
        lines: list[int] = []
        users: list[str] = []
        items: list[str] = []
        offsets: list[int] = []  # days before end_date
        try:
            with open_text(file, encoding=encoding) as handle:
                for number, text in enumerate(handle, start=1):
                    fields = text.split()
                    if len(fields) < 2:
                        continue  # a blank line, or a user without items: no event
                    user, seq = fields[0], fields[1:]
                    n = len(seq)
                    lines.extend([number] * n)
                    users.extend([user] * n)
                    items.extend(seq)
                    offsets.extend(range(n - 1, -1, -1))
                    while len(lines) >= chunksize:
                        yield _chunk(lines[:chunksize], users[:chunksize], items[:chunksize], offsets[:chunksize], event_type, end)
                        del lines[:chunksize], users[:chunksize], items[:chunksize], offsets[:chunksize]
        except UnicodeDecodeError:
            raise SourceError(f"{file}: not readable as {encoding}. Fix: set data.options.encoding in params.yaml.") from None
        except STREAM_ERRORS as exc:
            raise SourceError(f"{file}: the file is damaged or truncated ({exc}). Fix: re-download or re-compress the file.") from None
        if lines:
            yield _chunk(lines, users, items, offsets, event_type, end)


def _chunk(lines, users, items, offsets, event_type: str, end: pd.Timestamp) -> pd.DataFrame:
    nanos = end.value - np.asarray(offsets, dtype=np.int64) * DAY_NS
    stamps = pd.Series(pd.to_datetime(nanos, unit="ns", utc=True))
    return canonical_chunk(
        raw_line=pd.Series(lines, dtype="int64"),
        user_id=pd.Series(users, dtype=object),
        item_id=pd.Series(items, dtype=object),
        event_type=event_type,
        timestamp=stamps,
    )
