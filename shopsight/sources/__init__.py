"""File adapters that stream public e-commerce formats as canonical event chunks.

Every adapter reads its file(s) in chunks (memory does not grow with the file) and yields
DataFrames with the canonical columns of `shopsight.schema` plus `raw_line`, the 1-based
line of the row in its source file (the row number for Parquet/Excel), so a rejects file can
point at it. With several files (a list or a glob) `raw_line` counts within each file.

Adapters map and convert; they never drop or repair rows that break the contract. An event
name with no canonical meaning becomes ``"unknown:<raw>"``, a missing id <NA>, a negative price
stays negative: the ingest validator rejects such rows with a reason. What is a documented
semantic of the format (a UCI cancellation) is mapped. Ids are passed on exactly as read (never
trimmed). Prices and quantities stay the text of the file for the validator to parse strictly
(`12,50` is not silently NaN, `2.5` not silently 1). A timestamp that does not convert is NaT with
the reason in `timestamp_problem` (unparseable, out of range, which epoch unit it looks like,
nonexistent or ambiguous local time).

Files may be gzip/bzip2/xz/zip-compressed (recognised by their magic bytes); NUL bytes are read
as a visible symbol and rejected, never allowed to cut a field.

Dtypes of a chunk: user_id, item_id, session_id, category, price, quantity, timestamp_problem
"string" (Arrow-backed); event_type object (str); timestamp datetime64[ns, UTC]; raw_line int64.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


class SourceError(ValueError):
    """A source file is missing, unreadable, or lacks a required column (one message: file, column, fix)."""


@dataclass(frozen=True)
class SourceInfo:
    """What a source format can provide."""

    name: str
    has_item_ids: bool
    has_sessions: bool


SOURCE_KINDS: tuple[str, ...] = ("retailrocket", "rees46", "taobao", "cdnow", "online_retail", "generic", "sequence_text")

_SOURCE_INFOS: dict[str, SourceInfo] = {
    "retailrocket": SourceInfo("retailrocket", has_item_ids=True, has_sessions=False),
    "rees46": SourceInfo("rees46", has_item_ids=True, has_sessions=True),
    "taobao": SourceInfo("taobao", has_item_ids=True, has_sessions=False),
    # CDNOW has no products: item_id is the constant "cdnow:any" (see shopsight.sources.cdnow).
    "cdnow": SourceInfo("cdnow", has_item_ids=False, has_sessions=False),
    # One invoice is one session.
    "online_retail": SourceInfo("online_retail", has_item_ids=True, has_sessions=True),
    # Sessions only if a session column is mapped; the ingest derives them otherwise.
    "generic": SourceInfo("generic", has_item_ids=True, has_sessions=False),
    "sequence_text": SourceInfo("sequence_text", has_item_ids=True, has_sessions=False),  # `user item item ...` lines
}


def _check_kind(kind: str) -> None:
    if kind not in _SOURCE_INFOS:
        raise SourceError(
            f"unknown source kind {kind!r}; expected one of {', '.join(SOURCE_KINDS)}. "
            f"Fix: set data.source in params.yaml to one of them."
        )


def source_info(kind: str) -> SourceInfo:
    """What the source `kind` provides (item ids, sessions)."""
    _check_kind(kind)
    return _SOURCE_INFOS[kind]


def read_source(
    kind: str,
    path: str | Path | list[str | Path],
    *,
    chunksize: int = 1_000_000,
    options: dict | None = None,
    raw: bool = False,
) -> Iterator[pd.DataFrame]:
    """Stream the file(s) at `path` (a path, a list of paths or a glob) as canonical chunks.

    Missing files, unknown options and missing required columns raise SourceError at once,
    before the first chunk; a file that turns out unreadable half-way raises it while iterating.
    Each chunk has at most `chunksize` rows and never spans two files. With `raw`, an adapter that can
    (`RAW_CHUNKS`) may yield shopsight.sources.canonical.RawChunk objects instead, for the ingest's fast path.
    """
    _check_kind(kind)
    if not isinstance(chunksize, int) or chunksize < 1:
        raise SourceError(f"chunksize must be a positive integer, got {chunksize!r}. Fix: set data.chunksize in params.yaml.")
    adapter = importlib.import_module(f"shopsight.sources.{kind}")  # lazy: import only the format in use
    if raw and getattr(adapter, "RAW_CHUNKS", False):
        return adapter.read_events(path, chunksize=chunksize, options=dict(options or {}), raw=True)
    return adapter.read_events(path, chunksize=chunksize, options=dict(options or {}))


__all__ = ["SOURCE_KINDS", "SourceError", "SourceInfo", "read_source", "source_info"]
