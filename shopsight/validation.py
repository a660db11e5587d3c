"""Row-level checks of the canonical event contract (a pandera schema): every failing row gets a reason,
none is dropped silently."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import pandera.pandas as pa

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


def _check(fn, reason: str) -> pa.Check:
    # The check's name is the reason written to the rejects file; nulls are checked too.
    return pa.Check(fn, name=reason, ignore_na=False)


@lru_cache(maxsize=8)
def contract_schema(min_timestamp: str, max_timestamp: str) -> pa.DataFrameSchema:
    """The event contract of DESIGN.md as a pandera schema over parsed columns (see `_parse`)."""
    lo, hi = pd.Timestamp(min_timestamp, tz="UTC"), pd.Timestamp(max_timestamp, tz="UTC")
    return pa.DataFrameSchema(
        {
            "user_id": pa.Column("string", _check(lambda s: s.notna() & s.ne(""), "missing user_id"), nullable=True),
            "item_id": pa.Column("string", _check(lambda s: s.notna() & s.ne(""), "missing item_id"), nullable=True),
            "event_type": pa.Column(
                "string",
                _check(lambda s: s.isin(EVENT_TYPES), f"unknown event_type (expected one of {', '.join(EVENT_TYPES)})"),
                nullable=True,
            ),
            "timestamp": pa.Column(
                "datetime64[ns, UTC]",
                [
                    _check(lambda s: s.notna(), "missing or unparseable timestamp"),
                    _check(lambda s: s.isna() | ((s >= lo) & (s <= hi)), f"timestamp outside [{min_timestamp}, {max_timestamp}]"),
                ],
                nullable=True,
            ),
            "price": pa.Column(
                "float64",
                [
                    _check(lambda s: s.isna() | (s >= 0), "negative price"),
                    _check(lambda s: ~np.isinf(s.to_numpy(dtype="float64", na_value=np.nan)), "infinite price"),
                ],
                nullable=True,
            ),
            "price_is_number": pa.Column(bool, _check(lambda s: s, "price is not a number")),
            "quantity": pa.Column(
                "float64",
                [
                    _check(lambda s: s.isna() | (s >= 1), "quantity < 1"),
                    _check(lambda s: s.isna() | (s == np.floor(s)), "quantity is not an integer"),
                ],
                nullable=True,
            ),
            "quantity_is_number": pa.Column(bool, _check(lambda s: s, "quantity is not a number")),
        },
        strict=False,
    )


def _as_utc(values: pd.Series) -> pd.Series:
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.dt.tz_localize("UTC").astype("datetime64[ns, UTC]")
    return pd.to_datetime(values, errors="coerce", utc=True, format="mixed").astype("datetime64[ns, UTC]")


def _optional_string(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame.columns:
        return pd.Series(pd.NA, index=frame.index, dtype="string")
    values = frame[column].astype("string").str.strip()
    return values.mask(values.eq(""))


def _numeric(frame: pd.DataFrame, column: str) -> tuple[pd.Series, pd.Series]:
    if column not in frame.columns:
        return pd.Series(np.nan, index=frame.index, dtype="float64"), pd.Series(True, index=frame.index)
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce").astype("float64")
    return values, ~(raw.notna() & values.isna())


def _parse(frame: pd.DataFrame) -> pd.DataFrame:
    """Types only (nothing rejected here): strings stripped, event names lower-cased, times to UTC."""
    price, price_ok = _numeric(frame, "price")
    quantity, quantity_ok = _numeric(frame, "quantity")
    return pd.DataFrame(
        {
            "user_id": frame["user_id"].astype("string").str.strip(),
            "item_id": frame["item_id"].astype("string").str.strip(),
            "event_type": frame["event_type"].astype("string").str.strip().str.lower(),
            "timestamp": _as_utc(frame["timestamp"]),
            "session_id": _optional_string(frame, "session_id"),
            "category": _optional_string(frame, "category"),
            "price": price,
            "price_is_number": price_ok.to_numpy(bool),
            "quantity": quantity,
            "quantity_is_number": quantity_ok.to_numpy(bool),
        },
        index=frame.index,
    )


def validate_events(
    frame: pd.DataFrame,
    *,
    source: str,
    min_timestamp: str = "1990-01-01",
    max_timestamp: str = "2100-01-01",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a chunk into canonical valid rows and rejected rows with a `reason` column.

    Valid rows have the canonical dtypes (quantity defaults to 1). Rejected rows keep their
    original values as strings plus `reason` (all failed checks, '; '-joined) and `source`.
    """
    check_required_columns(frame, source)
    frame = frame.reset_index(drop=True)
    parsed = _parse(frame)
    reasons = pd.Series("", index=frame.index, dtype=object)
    try:
        contract_schema(min_timestamp, max_timestamp).validate(parsed, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases.dropna(subset=["index"])
        by_row = cases.groupby("index", sort=False)["check"].agg(lambda checks: "; ".join(dict.fromkeys(map(str, checks))))
        reasons.loc[by_row.index.astype(int)] = by_row.to_numpy()
    bad = (reasons != "").to_numpy()
    ok = parsed.loc[~bad]
    valid = pd.DataFrame(
        {
            "user_id": ok["user_id"],
            "item_id": ok["item_id"],
            "event_type": pd.Categorical(ok["event_type"].to_numpy(dtype=object), categories=list(EVENT_TYPES)),
            "timestamp": ok["timestamp"],
            "session_id": ok["session_id"],
            "category": ok["category"],
            "price": ok["price"],
            "quantity": ok["quantity"].fillna(1).astype("int64"),
        }
    )
    rejects = frame.loc[bad].copy()
    for col in rejects.columns:
        rejects[col] = rejects[col].astype("string")
    rejects["reason"] = pd.array(reasons[bad].to_numpy(), dtype="string")
    rejects["source"] = source
    return valid.reset_index(drop=True), rejects.reset_index(drop=True)


def canonical_columns_only(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[list(CANONICAL_COLUMNS)]
