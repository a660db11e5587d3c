"""Row-level checks of the canonical event contract: every failing row gets a reason, none is dropped silently."""

from __future__ import annotations

import numpy as np
import pandas as pd

from shopsight.schema import CANONICAL_COLUMNS, EVENT_TYPES, REQUIRED_COLUMNS


class ContractError(ValueError):
    """A source cannot be converted at all (e.g. a required column is missing)."""


def check_required_columns(frame: pd.DataFrame, source: str) -> None:
    """Fail with one message naming the file, the missing column(s) and the fix."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ContractError(
            f"{source}: missing required column(s) {', '.join(missing)}; "
            f"found {', '.join(map(str, frame.columns))}. Map them in params.yaml "
            f"(data.source / data.options.columns) or fix the file."
        )


def _as_utc(values: pd.Series) -> pd.Series:
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.dt.tz_localize("UTC")
    return pd.to_datetime(values, errors="coerce", utc=True, format="mixed")


def validate_events(
    frame: pd.DataFrame,
    *,
    source: str,
    min_timestamp: str = "2000-01-01",
    max_timestamp: str = "2100-01-01",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a chunk into canonical valid rows and rejected rows with a `reason` column.

    Valid rows have the canonical dtypes (quantity defaults to 1). Rejected rows keep their
    original values as strings plus `reason` (all failed checks, '; '-joined) and `source`.
    """
    check_required_columns(frame, source)
    n = len(frame)
    reasons = np.full(n, "", dtype=object)

    def flag(mask: np.ndarray, reason: str) -> None:
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            reasons[mask] = np.where(reasons[mask] == "", reason, reasons[mask] + "; " + reason)

    user = frame["user_id"].astype("string").str.strip()
    item = frame["item_id"].astype("string").str.strip()
    flag((user.isna() | user.eq("")).to_numpy(bool, na_value=True), "missing user_id")
    flag((item.isna() | item.eq("")).to_numpy(bool, na_value=True), "missing item_id")

    event = frame["event_type"].astype("string").str.strip().str.lower()
    bad_event = ~event.isin(EVENT_TYPES).to_numpy(bool, na_value=False)
    flag(bad_event, f"unknown event_type (expected one of {', '.join(EVENT_TYPES)})")

    ts = _as_utc(frame["timestamp"])
    lo, hi = pd.Timestamp(min_timestamp, tz="UTC"), pd.Timestamp(max_timestamp, tz="UTC")
    flag(ts.isna().to_numpy(), "missing or unparseable timestamp")
    flag((ts.notna() & ((ts < lo) | (ts > hi))).to_numpy(), f"timestamp outside [{min_timestamp}, {max_timestamp}]")

    if "price" in frame.columns:
        price = pd.to_numeric(frame["price"], errors="coerce").astype("float64")
        raw_price_present = frame["price"].notna().to_numpy()
        flag(raw_price_present & price.isna().to_numpy(), "price is not a number")
        flag((price < 0).to_numpy(bool, na_value=False), "negative price")
        flag(np.isinf(price.to_numpy(dtype="float64", na_value=np.nan)), "infinite price")
    else:
        price = pd.Series(np.nan, index=frame.index, dtype="float64")

    if "quantity" in frame.columns:
        qty_num = pd.to_numeric(frame["quantity"], errors="coerce")
        qty_present = frame["quantity"].notna().to_numpy()
        flag(qty_present & qty_num.isna().to_numpy(), "quantity is not a number")
        flag((qty_num < 1).to_numpy(bool, na_value=False), "quantity < 1")
        flag((qty_num.notna() & (qty_num != np.floor(qty_num.fillna(0)))).to_numpy(), "quantity is not an integer")
        quantity = qty_num.fillna(1)
    else:
        quantity = pd.Series(1, index=frame.index)

    bad = reasons != ""
    valid = pd.DataFrame(
        {
            "user_id": user[~bad].astype("string"),
            "item_id": item[~bad].astype("string"),
            "event_type": pd.Categorical(event[~bad].to_numpy(dtype=object), categories=list(EVENT_TYPES)),
            "timestamp": ts[~bad].astype("datetime64[ns, UTC]"),
            "session_id": _optional_string(frame, "session_id")[~bad],
            "category": _optional_string(frame, "category")[~bad],
            "price": price[~bad].astype("float64"),
            "quantity": quantity[~bad].astype("int64"),
        }
    )
    rejects = frame.loc[bad].copy()
    for col in rejects.columns:
        rejects[col] = rejects[col].astype("string")
    rejects["reason"] = pd.array(reasons[bad], dtype="string")
    rejects["source"] = source
    return valid.reset_index(drop=True), rejects.reset_index(drop=True)


def _optional_string(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame.columns:
        return pd.Series(pd.NA, index=frame.index, dtype="string")
    values = frame[column].astype("string").str.strip()
    return values.mask(values.eq(""))


def canonical_columns_only(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[list(CANONICAL_COLUMNS)]
