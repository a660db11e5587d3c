import numpy as np
import pandas as pd
import pytest

from shopsight.schema import EVENT_TYPES
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


def test_each_row_gets_exactly_its_own_reasons_in_contract_order_after_the_adapters_problem():
    """Rows failing in different combinations (and rows sharing one) each get their own '; '-joined reasons: the
    adapter's timestamp problem first, then the failed checks in the order of the contract; valid rows none."""
    raw = _raw(
        user_id=["u1", None, None, "u4", "u5", "u6"],
        item_id=["i1", "i2", "i3", "i4", "i5", "i6"],
        event_type=["bogus", "view", "bogus", "view", "view", "cart"],
        timestamp=[pd.NaT, pd.Timestamp("2026-01-05", tz="UTC"), pd.Timestamp("2026-01-05", tz="UTC"), pd.NaT,
                   pd.Timestamp("2026-01-05", tz="UTC"), pd.Timestamp("2026-01-05", tz="UTC")],
        price=[-1.0, 1.0, -2.0, 1.0, 1.0, 1.0],
        quantity=[1, 1, 1, 1, 1, 1],
    )
    raw["timestamp_problem"] = pd.array(["timestamp is not a number", None, None, "", None, None], dtype="string")
    valid, rejects = validate_events(raw, source="f.csv")
    unknown = f"unknown event_type (expected one of {', '.join(EVENT_TYPES)})"
    assert rejects["reason"].tolist() == [
        f"timestamp is not a number; {unknown}; negative price",
        "missing user_id",
        f"missing user_id; {unknown}; negative price",
        "missing timestamp",  # an empty problem text is no problem
    ]
    assert rejects["user_id"].tolist()[:1] == ["u1"] and valid["user_id"].tolist() == ["u5", "u6"]


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
    import shopsight.validation as validation

    numpy_result = validation.ContractColumn(np.dtype("float64"), True, (validation.ContractCheck("numpy result", lambda s: s.to_numpy() > 0),))
    monkeypatch.setattr(validation, "contract_checks", lambda lo, hi: {"price": numpy_result})
    with pytest.raises(ContractError, match="could not be checked"):
        validate_events(_raw(), source="f.csv")
    wrong_dtype = validation.ContractColumn(pd.Int64Dtype(), True, ())
    monkeypatch.setattr(validation, "contract_checks", lambda lo, hi: {"price": wrong_dtype})
    with pytest.raises(ContractError, match="column price is float64, the contract expects Int64"):
        validate_events(_raw(), source="f.csv")


def test_the_pandera_schema_fails_exactly_the_rows_ingest_rejects_for_the_same_reasons():
    """contract_schema (pandera, lazy validation) and failed_checks (the functions run directly, as ingest does) give the
    same (reason, row) pairs on rows that break every rule of the contract, and both pass the parsed frame's dtypes."""
    import pandera.errors

    from shopsight.validation import _parse, contract_checks, contract_schema, failed_checks

    frame = pd.DataFrame(_EDGE_ROWS, columns=["user_id", "item_id", "event_type", "timestamp", "session_id", "category", "price", "quantity"])
    frame.loc[0, "item_id"] = "i\x01"
    frame.loc[1, "session_id"] = "s\u2400"
    parsed, _ = _parse(frame)
    direct = {(reason, int(row)) for reason, rows in failed_checks(parsed, contract_checks("1990-01-01", "2100-01-01"), "f.csv") for row in rows}
    with pytest.raises(pandera.errors.SchemaErrors) as err:
        contract_schema("1990-01-01", "2100-01-01").validate(parsed, lazy=True)
    cases = err.value.failure_cases
    assert set(cases["schema_context"]) == {"Column"}, "only check failures, no dtype or nullability error"
    through_pandera = {(str(check), int(row)) for check, row in zip(cases["check"], cases["index"])}
    assert through_pandera == direct
    assert len({reason for reason, _ in direct}) >= 12  # most rules are exercised


# Rows on both sides of every line split_plain_rows draws: each must get the same verdict, values and reasons whether
# the plain path takes it or the full one (the adapter's conversion, then validate_events).
_EDGE_ROWS = [
    # user, item, event, timestamp, session, category, price, quantity
    ("u1", "i1", "view", "2026-01-05 10:00:00", "s1", "c1", "16.13", "1"),
    ("u2", "i2", "cart", "2026-01-05T10:00:00.123456789Z", "", "", "", ""),
    ("u3", "i3", "buy", "2026-01-05T10:00:00+02:00", "s3", "c3", "5.", "007"),
    ("u4", "i4", "purchase", "2026-01-05 10:00:00-0130", "s4", "c4", ".5", "2"),
    ("u 5", "i5", "view", "2026-01-05 10:00:00", "s5", "c5", "1", "1"),
    ("ü6", "i6", "view", "2026-01-05 10:00:00", "s6", "c6", "1", "1"),
    (" u7", "i7", "view", "2026-01-05 10:00:00", "s7", "c7", "1", "1"),
    ("u8", "x" * 256, "view", "2026-01-05 10:00:00", "s8", "c8", "1", "1"),
    ("u9", "x" * 257, "view", "2026-01-05 10:00:00", "s9", "c9", "1", "1"),
    ("u10", "i10", "View", "2026-01-05 10:00:00", "s10", "c10", "1", "1"),
    ("u11", "i11", "teleport", "2026-01-05 10:00:00", "s11", "c11", "1", "1"),
    ("u12", "i12", "view", "2026-02-30 10:00:00", "s12", "c12", "1", "1"),
    ("u13", "i13", "view", "1970-01-01 00:00:00", "s13", "c13", "1", "1"),
    ("u14", "i14", "view", "2026-01-05", "s14", "c14", "1", "1"),
    ("u15", "i15", "view", " 2026-01-05 10:00:00", "  ", "c 15", "1", "1"),
    ("u16", "i16", "view", "2026-01-05 10:00:00", "s16", "c16", "1.2.3", "1"),
    ("u17", "i17", "view", "2026-01-05 10:00:00", "s17", "c17", "1/2", "1"),
    ("u18", "i18", "view", "2026-01-05 10:00:00", "s18", "c18", "9" * 31, "1"),
    ("u19", "i19", "view", "2026-01-05 10:00:00", "s19", "c19", "1" + "0" * 400, "1"),
    ("u20", "i20", "view", "2026-01-05 10:00:00", "s20", "c20", "-3.5", "0"),
    ("u21", "i21", "view", "2026-01-05 10:00:00", "s21", "c21", "1e3", "2.0"),
    ("u22", "i22", "view", "2026-01-05 10:00:00", "s22", "c22", "12,50", "2.5"),
    ("u23", "i23", "view", "2026-01-05 10:00:00", "s23", "c23", " 4 ", "9007199254740993"),
    ("", "i24", "view", "2026-01-05 10:00:00", "s24", "c24", "1", "1"),
    ("u25", "i25", "", "", "s25", "c25", "1", "1"),
    ("u26", "i26", "view", "yesterday", "s26", "c26", "inf", "+3"),
]


def _through_both_paths(path, chunksize, options):
    """(valid rows sorted, rejects, plain rows) of the file through check_chunk with frames (the full path for every
    row) and with RawChunks (the plain path first): the first two for each path."""
    import pyarrow as pa

    from shopsight.config import load_params
    from shopsight.ingest import check_chunk
    from shopsight.sources import read_source
    from shopsight.validation import split_plain_rows

    params = load_params("params.yaml")
    out = []
    for raw in (False, True):
        valid, rejects, plain = [], [], 0
        for chunk in read_source("generic", path, chunksize=chunksize, options=options, raw=raw):
            if raw:
                plain += int(split_plain_rows(chunk)[1].sum())
            checked = check_chunk(chunk, source=str(path), params=params)
            valid += [checked.valid] if checked.valid is not None else []
            rejects += [checked.rejects] if checked.rejects is not None else []
        valid = pa.concat_tables(valid).to_pandas().sort_values(["user_id", "timestamp", "item_id"]).reset_index(drop=True)
        out.append((valid, pa.concat_tables(rejects).to_pandas(), plain))
    return out


@pytest.mark.parametrize("zone", ["UTC", None])
def test_plain_rows_of_a_typed_parquet_file_get_what_the_full_path_gives(tmp_path, zone):
    """Parquet with typed times (zoned or naive), prices and quantities: the plain path's rows and values equal the full
    path's, NaN and null prices are missing prices, negative and infinite ones and quantities below 1 are rejected."""
    n = 60
    times = pd.Series(pd.date_range("2026-01-05", periods=n, freq="37min", tz="UTC"))
    times[3], times[4] = pd.NaT, pd.Timestamp("1971-01-01", tz="UTC")
    frame = pd.DataFrame({
        "user_id": [f"u{i % 9}" if i != 5 else "u 5" for i in range(n)],
        "item_id": [f"i{i}" for i in range(n)],
        "event_type": ["view", "cart", "purchase", "teleport"] * (n // 4),
        "timestamp": times if zone else times.dt.tz_localize(None),
        "session_id": [f"s{i}" if i % 7 else None for i in range(n)],
        "category": ["c1"] * n,
        "price": [1.5, np.nan, np.inf, -3.5, None, 0.0] * (n // 6),
        "quantity": pd.array([1, 0, 2, None, 3, 9] * (n // 6), dtype="Int64"),
    })
    path = tmp_path / "events.parquet"
    frame.to_parquet(path)
    (full_valid, full_rejects, _), (plain_valid, plain_rejects, plain) = _through_both_paths(path, 1_000_000, {})
    assert 0 < plain < n and len(full_rejects) > 0
    pd.testing.assert_frame_equal(plain_valid, full_valid)
    pd.testing.assert_frame_equal(plain_rejects, full_rejects)
    assert full_valid["price"].isna().any() and (full_valid["quantity"] >= 1).all()


@pytest.mark.parametrize("chunksize", [1_000_000, 7])
def test_plain_rows_get_what_the_full_path_gives(tmp_path, chunksize):
    """A generic CSV of edge rows (plus many plain ones) through the ingest's check_chunk with RawChunks equals the
    adapter's canonical chunks through validate_events: the same valid rows and values, the same rejects and reasons."""
    rows = _EDGE_ROWS * 3 + [(f"g{i}", f"i{i % 50}", "view", f"2026-01-{1 + i % 28:02d}T{i % 24:02d}:00:00Z", f"s{i}", "c1", f"{i}.25", str(1 + i % 3)) for i in range(200)]
    path = tmp_path / "events.csv"
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp", "session_id", "category", "price", "quantity"])
    frame.to_csv(path, index=False)
    (full_valid, full_rejects, _), (plain_valid, plain_rejects, plain) = _through_both_paths(path, chunksize, {"event_map": {"buy": "purchase"}})
    assert plain == 200 + 3 * 5  # the plain path took the plain rows and the plain edge rows (u1-u4, u8)
    assert len(full_valid) < len(rows) and len(full_rejects) > 0  # both paths had work
    pd.testing.assert_frame_equal(plain_valid, full_valid)
    pd.testing.assert_frame_equal(plain_rejects, full_rejects)
    assert full_valid.loc[full_valid["user_id"] == "u3", "event_type"].tolist() == ["purchase"] * 3  # event_map applied
