import numpy as np
import pandas as pd
import pytest

from shopsight.validation import ContractError, validate_events


def _raw(**overrides):
    base = {
        "user_id": ["u1", "u2", "u3"],
        "item_id": ["i1", "i2", "i3"],
        "event_type": ["view", "cart", "purchase"],
        "timestamp": ["2026-01-05 10:00:00", "2026-01-05 10:05:00", "2026-01-05 10:10:00"],
        "price": [10.0, 20.0, 30.0],
        "quantity": [1, 2, 1],
    }
    base.update(overrides)
    return pd.DataFrame(base)


def test_valid_rows_get_canonical_dtypes_and_default_quantity():
    raw = _raw(quantity=[1, None, 3])
    valid, rejects = validate_events(raw, source="f.csv")
    assert len(valid) == 3 and len(rejects) == 0
    assert str(valid["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert valid["quantity"].tolist() == [1, 1, 3]
    assert list(valid["event_type"].cat.categories)[:2] == ["view", "cart"]


def test_missing_required_column_names_file_column_and_fix():
    raw = _raw().drop(columns=["timestamp"])
    with pytest.raises(ContractError) as err:
        validate_events(raw, source="events.csv")
    message = str(err.value)
    assert "events.csv" in message and "timestamp" in message and "params.yaml" in message


@pytest.mark.parametrize(
    "column, value, reason",
    [
        ("event_type", "clickety", "unknown event_type"),
        ("timestamp", "not a date", "unparseable timestamp"),
        ("timestamp", "1970-01-02 00:00:00", "timestamp outside"),
        ("price", -5.0, "negative price"),
        ("user_id", None, "missing user_id"),
        ("quantity", 0, "quantity < 1"),
    ],
)
def test_each_contract_break_goes_to_rejects_with_its_reason(column, value, reason):
    raw = _raw()
    raw[column] = raw[column].astype(object)
    raw.loc[1, column] = value
    valid, rejects = validate_events(raw, source="f.csv")
    assert len(valid) == 2, "the other rows must survive"
    assert len(rejects) == 1
    assert reason in rejects.loc[0, "reason"]
    assert rejects.loc[0, "source"] == "f.csv"
    assert rejects.loc[0, "item_id"] == "i2", "the rejected row keeps its original values"


def test_several_failures_on_one_row_are_all_reported():
    raw = _raw()
    raw["price"] = raw["price"].astype(object)
    raw.loc[0, "price"] = -1.0
    raw.loc[0, "event_type"] = "bogus"
    _, rejects = validate_events(raw, source="f.csv")
    assert "negative price" in rejects.loc[0, "reason"] and "unknown event_type" in rejects.loc[0, "reason"]


def test_nothing_is_dropped_silently():
    rng = np.random.default_rng(0)
    raw = _raw(
        user_id=[f"u{i}" if i % 7 else None for i in range(50)],
        item_id=[f"i{i}" for i in range(50)],
        event_type=rng.choice(["view", "cart", "purchase", "oops"], 50).tolist(),
        timestamp=["2026-01-05"] * 48 + ["garbage", "2026-02-01"],
        price=rng.normal(10, 10, 50).tolist(),
        quantity=[1] * 50,
    )
    valid, rejects = validate_events(raw, source="f.csv")
    assert len(valid) + len(rejects) == 50
    assert len(rejects) > 0
