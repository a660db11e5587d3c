"""The canonical event contract every source is converted to at ingest (see DESIGN.md)."""

from __future__ import annotations

import pyarrow as pa

EVENT_TYPES: tuple[str, ...] = ("view", "cart", "remove_from_cart", "favorite", "purchase")

REQUIRED_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "event_type", "timestamp")
OPTIONAL_COLUMNS: tuple[str, ...] = ("session_id", "category", "price", "quantity")
CANONICAL_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS

# pandas dtypes of a canonical frame after ingest.
CANONICAL_DTYPES: dict[str, str] = {
    "user_id": "string",
    "item_id": "string",
    "event_type": "category",
    "timestamp": "datetime64[ns, UTC]",
    "session_id": "string",
    "category": "string",
    "price": "float64",
    "quantity": "int64",
}

# The Parquet schema of data/events.parquet (ingest output and simulator output alike).
CANONICAL_ARROW = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("event_type", pa.string()),
        ("timestamp", pa.timestamp("ns", tz="UTC")),
        ("session_id", pa.string()),
        ("category", pa.string()),
        ("price", pa.float64()),
        ("quantity", pa.int64()),
    ]
)

SESSION_GAP_MINUTES = 30

# Longer ids are rejected at ingest: no real user, item, session or category id is this long, and a
# runaway field (a missing quote swallowing the rest of the file) must not become an id.
MAX_ID_LENGTH = 256
