import numpy as np
import pandas as pd
import pytest

from shopsight.validation import ContractError, parse_price, parse_quantity, validate_events


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


# ---------------------------------------------------------------- strict parsing of text fields


@pytest.mark.parametrize(
    ("text", "value", "is_number"),
    [
        ("2.55", 2.55, True),
        (" 3 ", 3.0, True),
        ("1e3", 1000.0, True),
        ("", np.nan, True),  # missing is allowed (no price)
        (None, np.nan, True),
        ("inf", np.inf, True),
        ("-Infinity", -np.inf, True),
        ("1e400", np.inf, True),  # overflows to +inf, rejected as infinite
        ("abc", np.nan, False),
        ("12,50", np.nan, False),
        ("$5", np.nan, False),
        ("0x10", np.nan, False),
        ("nan", np.nan, False),
        ("1_000", np.nan, False),
    ],
)
def test_price_text_is_parsed_strictly(text, value, is_number):
    values, ok = parse_price(pd.Series([text], dtype="string"))
    np.testing.assert_equal(values.iloc[0], value)
    assert bool(ok.iloc[0]) is is_number


@pytest.mark.parametrize(
    ("text", "value", "flags"),
    [
        ("3", 3, (True, True, True)),
        ("3.0", 3, (True, True, True)),
        ("", None, (True, True, True)),  # missing: the contract's default of 1 applies
        ("2.5", None, (True, False, True)),
        ("abc", None, (False, True, True)),
        ("NaN", None, (False, True, True)),
        ("1e20", None, (True, True, False)),
        ("9223372036854775807", 9223372036854775807, (True, True, True)),
        ("9223372036854775808", None, (True, True, False)),
    ],
)
def test_quantity_text_is_parsed_strictly(text, value, flags):
    values, is_number, is_integer, in_range = parse_quantity(pd.Series([text], dtype="string"))
    assert (bool(is_number.iloc[0]), bool(is_integer.iloc[0]), bool(in_range.iloc[0])) == flags
    assert (pd.isna(values.iloc[0]) if value is None else values.iloc[0] == value)


def test_text_prices_and_quantities_are_rejected_with_reasons():
    raw = _raw(price=["abc", "inf", "2.5"], quantity=["1", "2.5", "1e20"])
    valid, rejects = validate_events(raw, source="f.csv")
    assert len(valid) == 0
    assert rejects["reason"].tolist() == [
        "price is not a number",
        "infinite price; quantity is not an integer",
        "quantity out of range (beyond 64-bit integers)",
    ]
    assert rejects["price"].tolist() == ["abc", "inf", "2.5"], "rejects keep the text as written"


def test_ids_are_kept_exactly_and_bad_ids_are_rejected():
    raw = _raw(user_id=["u1", " u1", "u\u24001"], item_id=["i1", "i1", "i" * 300])
    valid, rejects = validate_events(raw, source="f.csv")
    assert valid["user_id"].tolist() == ["u1"]
    assert "user_id has leading or trailing whitespace" in rejects.loc[0, "reason"]
    assert "user_id contains a NUL byte" in rejects.loc[1, "reason"] and "item_id longer than 256" in rejects.loc[1, "reason"]


def test_adapter_timestamp_problem_is_the_reason():
    raw = _raw(timestamp=[pd.NaT, pd.NaT, pd.Timestamp("2026-01-05", tz="UTC")])
    raw["timestamp_problem"] = pd.array(["timestamp out of range as unix seconds", None, None], dtype="string")
    _, rejects = validate_events(raw, source="f.csv")
    assert rejects["reason"].tolist() == ["timestamp out of range as unix seconds", "missing timestamp"]
    assert "timestamp_problem" not in rejects.columns


def test_a_check_that_cannot_run_fails_loudly(monkeypatch):
    import pandera.pandas as pa

    import shopsight.validation as validation

    broken = pa.DataFrameSchema({"price": pa.Column("float64", pa.Check(lambda s: s.to_numpy() > 0, name="numpy result"), nullable=True)})
    monkeypatch.setattr(validation, "contract_schema", lambda lo, hi: broken)
    with pytest.raises(ContractError, match="could not be checked"):
        validate_events(_raw(), source="f.csv")
