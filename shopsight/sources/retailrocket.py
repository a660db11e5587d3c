"""RetailRocket `events.csv` (Kaggle "Retailrocket recommender system dataset").

events.csv: `timestamp,visitorid,event,itemid,transactionid`, timestamp in ms since the epoch,
event in view / addtocart / transaction. There are no sessions and no prices in the events.
Categories come from the optional item_properties_part*.csv (`timestamp,itemid,property,value`,
property "categoryid"), taking the latest value per item, and can be rolled up to the root of
category_tree.csv (`categoryid,parentid`).

options: item_properties (path, list or glob), category_tree (path),
category_level ("leaf" default, or "root"; "root" needs category_tree), encoding.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from shopsight.sources import SourceError
from shopsight.sources.canonical import canonical_chunk, epoch_to_utc, map_event_types
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

KIND = "retailrocket"
EVENT_MAP = {"view": "view", "addtocart": "cart", "transaction": "purchase"}
EVENT_COLUMNS = {
    "timestamp": "event time, ms since the epoch",
    "visitorid": "user id",
    "event": "event name",
    "itemid": "item id",
}
PROPERTY_COLUMNS = {"timestamp": "time of the value", "itemid": "item id", "property": "property name", "value": "value"}
TREE_COLUMNS = {"categoryid": "category id", "parentid": "parent category id"}
CATEGORY_PROPERTY = "categoryid"
OPTIONS = ("item_properties", "category_tree", "category_level", "encoding")


def read_events(path: str | Path | list, *, chunksize: int, options: dict[str, Any]) -> Iterator[pd.DataFrame]:
    """Stream events.csv as canonical chunks (see the module docstring for options)."""
    check_options(KIND, options, OPTIONS)
    encoding = options.get("encoding", DEFAULT_ENCODING)
    level = options.get("category_level", "leaf")
    if level not in ("leaf", "root"):
        raise SourceError(f"category_level must be 'leaf' or 'root', got {level!r}. Fix: data.options.category_level in params.yaml.")
    if level == "root" and not options.get("category_tree"):
        raise SourceError(
            "category_level 'root' needs the category tree. Fix: set data.options.category_tree to category_tree.csv in params.yaml."
        )
    files = resolve_paths(path, kind=KIND)
    headers = {}
    for file in files:
        headers[file] = read_header(file, encoding=encoding)
        require_columns(file, headers[file], EVENT_COLUMNS, kind=KIND)
    property_files = []
    if options.get("item_properties"):
        property_files = resolve_paths(options["item_properties"], kind=KIND, option="data.options.item_properties")
        for file in property_files:
            require_columns(file, read_header(file, encoding=encoding), PROPERTY_COLUMNS, kind=KIND)
    tree_file = None
    if options.get("category_tree"):
        (tree_file,) = resolve_paths(options["category_tree"], kind=KIND, option="data.options.category_tree")
        require_columns(tree_file, read_header(tree_file, encoding=encoding), TREE_COLUMNS, kind=KIND)
    return _generate(files, headers, property_files, tree_file, level, chunksize, encoding)


def _generate(
    files: list[Path],
    headers: dict[Path, list[str]],
    property_files: list[Path],
    tree_file: Path | None,
    level: str,
    chunksize: int,
    encoding: str,
) -> Iterator[pd.DataFrame]:
    item_category = load_item_categories(property_files, chunksize=chunksize, encoding=encoding)
    if level == "root" and tree_file is not None and len(item_category):
        roots = load_category_roots(tree_file, encoding=encoding)
        item_category = item_category.map(lambda c: roots.get(c, c)).astype(TEXT)
    for file in files:
        for raw in iter_csv_chunks(
            file, columns=headers[file], header_lines=1, chunksize=chunksize, usecols=list(EVENT_COLUMNS), encoding=encoding
        ):
            items = raw["itemid"].astype(TEXT)
            yield canonical_chunk(
                raw_line=raw[RAW_LINE],
                user_id=raw["visitorid"],
                item_id=items,
                event_type=map_event_types(raw["event"], EVENT_MAP),
                timestamp=epoch_to_utc(raw["timestamp"], "ms"),
                category=items.map(item_category),
            )


def load_item_categories(files: list[Path], *, chunksize: int, encoding: str = DEFAULT_ENCODING) -> pd.Series:
    """item id -> its latest "categoryid" value, streamed over the (large) property files."""
    latest = pd.DataFrame({"itemid": pd.Series(dtype=TEXT), "when": pd.Series(dtype="float64"), "value": pd.Series(dtype=TEXT)})
    for file in files:
        header = read_header(file, encoding=encoding)
        for raw in iter_csv_chunks(
            file, columns=header, header_lines=1, chunksize=chunksize, usecols=list(PROPERTY_COLUMNS), encoding=encoding
        ):
            rows = raw[raw["property"] == CATEGORY_PROPERTY]
            if rows.empty:
                continue
            part = pd.DataFrame(
                {
                    "itemid": rows["itemid"].astype(TEXT),
                    "when": pd.to_numeric(rows["timestamp"], errors="coerce").astype("float64"),
                    "value": rows["value"].astype(TEXT).str.strip(),
                }
            )
            # Only the latest value per item is kept, so memory follows the catalogue, not the file.
            latest = pd.concat([latest, part], ignore_index=True)
            latest = latest.sort_values("when", kind="stable", na_position="first").drop_duplicates("itemid", keep="last")
    return latest.set_index("itemid")["value"]


def load_category_roots(tree_file: Path, *, encoding: str = DEFAULT_ENCODING) -> dict[str, str]:
    """category id -> id of its root in category_tree.csv (a category with no parent is a root)."""
    tree = pd.read_csv(tree_file, dtype=str, keep_default_na=False, na_values=[""], encoding=encoding)
    parent = {
        str(c).strip(): (None if pd.isna(p) else str(p).strip())
        for c, p in zip(tree["categoryid"], tree["parentid"], strict=True)
        if not pd.isna(c)
    }
    roots: dict[str, str] = {}
    for start in parent:
        node, seen = start, {start}
        while parent.get(node) is not None and parent[node] not in seen:  # `seen` guards against cycles
            node = parent[node]
            seen.add(node)
        roots[start] = node
    return roots
