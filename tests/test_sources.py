"""File adapters: exact mapping of each public format, chunking, raw_line and error messages."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shopsight.schema import CANONICAL_COLUMNS, EVENT_TYPES
from shopsight.sources import SOURCE_KINDS, SourceError, SourceInfo, read_source, source_info

FIXTURES = Path(__file__).parent / "fixtures" / "sources"
RR = FIXTURES / "retailrocket"
RR_EVENTS = RR / "events.csv"
RR_OPTIONS = {
    "item_properties": [str(RR / "item_properties_part1.csv"), str(RR / "item_properties_part2.csv")],
    "category_tree": str(RR / "category_tree.csv"),
}
REES46_OCT = FIXTURES / "rees46" / "2019-Oct.csv"
REES46_NOV = FIXTURES / "rees46" / "2019-Nov.csv"
TAOBAO = FIXTURES / "taobao" / "UserBehavior.csv"
CDNOW = FIXTURES / "cdnow" / "CDNOW_master.txt"
CDNOW_HEADER = FIXTURES / "cdnow" / "CDNOW_master_with_header.txt"
CDNOW_PADDED = FIXTURES / "cdnow" / "CDNOW_padded.txt"
UCI = FIXTURES / "online_retail" / "Online_Retail.csv"
UCI_LATIN1 = FIXTURES / "online_retail" / "latin1.csv"
GENERIC = FIXTURES / "generic" / "clicks.csv"
GENERIC_OPTIONS = {
    "csv": {"sep": ";", "skiprows": 1},
    "columns": {
        "user_id": "visitor",
        "item_id": "product",
        "event_type": "action",
        "timestamp": "ts",
        "price": "basket_value",
        "quantity": "qty",
        "session_id": "sess",
        "category": "dept",
    },
    "event_map": {"open": "view", "basket": "cart", "order": "purchase"},
}

# (kind, path, options) of every fixture, for the properties all formats share.
CASES = [
    ("retailrocket", RR_EVENTS, RR_OPTIONS),
    ("rees46", [REES46_OCT, REES46_NOV], {}),
    ("taobao", TAOBAO, {}),
    ("cdnow", CDNOW, {}),
    ("cdnow", CDNOW_HEADER, {}),
    ("online_retail", UCI, {}),
    ("generic", GENERIC, GENERIC_OPTIONS),
]
CASE_IDS = ["retailrocket", "rees46", "taobao", "cdnow", "cdnow-header", "online_retail", "generic"]


def read_all(kind, path, chunksize=1_000_000, options=None) -> pd.DataFrame:
    return pd.concat(list(read_source(kind, path, chunksize=chunksize, options=options)), ignore_index=True)


def at_line(frame: pd.DataFrame, line: int) -> pd.Series:
    rows = frame[frame["raw_line"] == line]
    assert len(rows) == 1, f"expected one row from line {line}, got {len(rows)}"
    return rows.iloc[0]


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


# ---------------------------------------------------------------- shared properties


def test_kinds_and_infos():
    assert SOURCE_KINDS == ("retailrocket", "rees46", "taobao", "cdnow", "online_retail", "generic", "sequence_text")
    assert source_info("cdnow") == SourceInfo("cdnow", has_item_ids=False, has_sessions=False)
    assert source_info("retailrocket").has_sessions is False
    assert source_info("rees46").has_sessions is True
    assert source_info("online_retail").has_sessions is True
    assert all(source_info(k).has_item_ids for k in SOURCE_KINDS if k != "cdnow")
    with pytest.raises(SourceError, match="data.source"):
        source_info("amazon")


@pytest.mark.parametrize(("kind", "path", "options"), CASES, ids=CASE_IDS)
def test_chunks_have_canonical_columns_and_dtypes(kind, path, options):
    for chunk in read_source(kind, path, chunksize=7, options=options):
        assert list(chunk.columns) == [*CANONICAL_COLUMNS, "raw_line", "timestamp_problem"]
        assert 0 < len(chunk) <= 7
        assert chunk.index.equals(pd.RangeIndex(len(chunk)))
        # price and quantity stay text: the validator parses them, so "abc" is rejected, not NaN
        for column in ("user_id", "item_id", "session_id", "category", "price", "quantity", "timestamp_problem"):
            assert chunk[column].dtype == "string", column
        assert chunk["event_type"].dtype == object
        assert str(chunk["timestamp"].dtype) == "datetime64[ns, UTC]"
        assert chunk["raw_line"].dtype == "int64"


@pytest.mark.parametrize(("kind", "path", "options"), CASES, ids=CASE_IDS)
def test_chunked_reading_equals_one_chunk(kind, path, options):
    small = list(read_source(kind, path, chunksize=7, options=options))
    whole = list(read_source(kind, path, chunksize=1_000_000, options=options))
    assert len(small) > len(whole)  # the fixture really was split
    pd.testing.assert_frame_equal(pd.concat(small, ignore_index=True), pd.concat(whole, ignore_index=True))


@pytest.mark.parametrize(("kind", "path", "options"), CASES, ids=CASE_IDS)
def test_raw_line_points_at_the_source_line(kind, path, options):
    paths = path if isinstance(path, list) else [path]
    frames = [read_all(kind, p, chunksize=5, options=options) for p in paths]
    for file, frame in zip(paths, frames, strict=True):
        lines = Path(file).read_text(encoding="utf-8").splitlines()
        assert frame["raw_line"].is_unique
        checked = 0
        for row in frame.itertuples():
            source_line = lines[row.raw_line - 1]
            for value in (row.user_id, row.item_id if kind != "cdnow" else None, row.session_id):
                if isinstance(value, str):
                    assert value.lstrip("C") in source_line, (file, row.raw_line, value)
                    checked += 1
        assert checked >= len(frame)


def test_nothing_is_dropped():
    # One canonical row per data line of every fixture, bad rows included.
    assert len(read_all("retailrocket", RR_EVENTS)) == 24
    assert len(read_all("rees46", [REES46_OCT, REES46_NOV])) == 18 + 6
    assert len(read_all("taobao", TAOBAO)) == 24
    assert len(read_all("cdnow", CDNOW)) == 24
    assert len(read_all("online_retail", UCI)) == 24
    assert len(read_all("generic", GENERIC, options=GENERIC_OPTIONS)) == 10  # blank line included


def test_unknown_events_are_prefixed_not_dropped():
    events = pd.concat(
        [
            read_all("retailrocket", RR_EVENTS)["event_type"],
            read_all("rees46", REES46_OCT)["event_type"],
            read_all("taobao", TAOBAO)["event_type"],
            read_all("generic", GENERIC, options=GENERIC_OPTIONS)["event_type"],
        ]
    )
    unknown = sorted(set(events.dropna()) - set(EVENT_TYPES))
    assert unknown == ["unknown:click", "unknown:fav", "unknown:like", "unknown:share", "unknown:wishlist"]


# ---------------------------------------------------------------- RetailRocket


def test_retailrocket_mapping_and_ms_timestamps():
    frame = read_all("retailrocket", RR_EVENTS)
    first = at_line(frame, 2)  # 1433221332117,257597,view,355908,
    assert (first.user_id, first.item_id, first.event_type) == ("257597", "355908", "view")
    assert first.timestamp == ts("2015-06-02 05:02:12.117")  # exact to the millisecond
    assert at_line(frame, 12).event_type == "cart"  # addtocart
    purchase = at_line(frame, 13)  # transaction, transactionid 13556
    assert (purchase.event_type, purchase.item_id) == ("purchase", "150318")
    assert purchase.timestamp == ts("2015-06-02 05:32:56.120")
    assert frame["session_id"].isna().all() and frame["price"].isna().all() and frame["quantity"].isna().all()
    assert frame["category"].isna().all()  # no item properties given


def test_retailrocket_keeps_bad_rows_for_the_validator():
    frame = read_all("retailrocket", RR_EVENTS)
    assert pd.isna(at_line(frame, 17).user_id) and at_line(frame, 17).item_id == "17478"
    assert pd.isna(at_line(frame, 18).timestamp)  # "abc"
    assert at_line(frame, 19).event_type == "unknown:click"


def test_retailrocket_leaf_categories_use_latest_property_value():
    frame = read_all("retailrocket", RR_EVENTS, options=RR_OPTIONS)
    category = frame.groupby("item_id")["category"].first()
    assert category["355908"] == "1016"
    assert category["248676"] == "1146"
    assert category["318965"] == "809"  # 570 earlier in part1, 809 later in part2
    assert category["253185"] == "1016"  # the later value wins even though part2 comes after part1
    assert category["461686"] == "9999"  # not in the tree: still its own category
    assert pd.isna(category["17478"])  # only an "available" property


def test_retailrocket_root_categories_walk_the_tree():
    frame = read_all("retailrocket", RR_EVENTS, options={**RR_OPTIONS, "category_level": "root"})
    category = frame.groupby("item_id")["category"].first()
    assert category["355908"] == "885"  # 1016 -> 213 -> 1691 -> 885
    assert category["248676"] == "378"  # 1146 -> 542 -> 378
    assert category["318965"] == "809"  # a root itself
    assert category["461686"] == "9999"  # unknown to the tree: its own root
    assert pd.isna(category["17478"])


def test_retailrocket_root_level_needs_the_tree():
    with pytest.raises(SourceError, match="category_tree"):
        read_source("retailrocket", RR_EVENTS, options={"category_level": "root"})


# ---------------------------------------------------------------- REES46


def test_rees46_mapping_sessions_and_category_fallback():
    frame = read_all("rees46", REES46_OCT)
    first = at_line(frame, 2)
    assert first.event_type == "view"
    assert first.timestamp == ts("2019-10-01 00:00:00")
    assert first.category == "2103807459595387724"  # empty category_code -> category_id
    assert first.session_id == "72d76fde-8bb3-4e00-8c23-a032dfed738c"
    assert first.price == "35.79"  # prices stay as written; the validator parses them
    coded = at_line(frame, 3)
    assert coded.category == "appliances.environment.water_heater"
    assert (coded.user_id, coded.item_id) == ("554748717", "3900821")
    assert at_line(frame, 4).category == "furniture.living_room.sofa"  # empty brand is irrelevant
    assert [at_line(frame, n).event_type for n in (10, 12, 13)] == ["cart", "remove_from_cart", "purchase"]
    assert at_line(frame, 10).timestamp == ts("2019-10-01 00:00:10")


def test_rees46_bad_rows_stay():
    frame = read_all("rees46", REES46_OCT)
    assert at_line(frame, 17).event_type == "unknown:wishlist"
    bad = at_line(frame, 18)
    assert pd.isna(bad.user_id) and bad.price == "-1.00"
    assert pd.isna(at_line(frame, 19).timestamp)  # no " UTC": not the format's time stamp


def test_rees46_glob_and_list_read_every_month():
    by_glob = read_all("rees46", str(FIXTURES / "rees46" / "2019-*.csv"))
    by_list = read_all("rees46", [REES46_NOV, REES46_OCT])
    assert len(by_glob) == len(by_list) == 24
    pd.testing.assert_frame_equal(by_glob, by_list)  # glob matches are read in name order
    assert by_glob["timestamp"].dt.month.value_counts().to_dict() == {10: 17, 11: 6}


# ---------------------------------------------------------------- Taobao


def test_taobao_no_header_mapping_and_seconds():
    frame = read_all("taobao", TAOBAO)
    first = at_line(frame, 1)  # the first line is data, not a header
    assert (first.user_id, first.item_id, first.category, first.event_type) == ("1", "2268318", "2520377", "view")
    assert first.timestamp == ts("2017-11-24 17:21:10")
    assert [at_line(frame, n).event_type for n in (11, 14, 15)] == ["purchase", "cart", "favorite"]
    assert at_line(frame, 15).timestamp == ts("2017-12-01 16:00:00")


def test_taobao_out_of_window_and_bad_rows_are_kept():
    frame = read_all("taobao", TAOBAO)
    assert at_line(frame, 16).timestamp == ts("2017-11-21 17:00:00")  # before 2017-11-25
    assert at_line(frame, 17).timestamp == ts("2008-05-30 10:40:00")
    assert at_line(frame, 19).event_type == "unknown:like"
    assert pd.isna(at_line(frame, 20).user_id)
    assert pd.isna(at_line(frame, 21).timestamp)  # "x1511544070"


def test_taobao_header_line_is_detected(tmp_path):
    with_header = tmp_path / "UserBehavior.csv"
    with_header.write_text("user_id,item_id,category_id,behavior_type,timestamp\n" + TAOBAO.read_text())
    plain, headed = read_all("taobao", TAOBAO), read_all("taobao", with_header)
    assert (headed["raw_line"] == plain["raw_line"] + 1).all()
    pd.testing.assert_frame_equal(headed.drop(columns="raw_line"), plain.drop(columns="raw_line"))


# ---------------------------------------------------------------- CDNOW


def test_cdnow_purchases_with_unit_price():
    frame = read_all("cdnow", CDNOW)
    assert (frame["event_type"] == "purchase").all() and (frame["item_id"] == "cdnow:any").all()
    row = at_line(frame, 3)  # 00002 19970112  5  77.00
    assert (row.user_id, row.quantity) == ("00002", "5")
    assert float(row.price) == pytest.approx(15.40)
    assert row.timestamp == ts("1997-01-12")
    zero_cds = at_line(frame, 21)  # 00006 19970101  0  20.99
    assert zero_cds.quantity == "0" and pd.isna(zero_cds.price)  # kept for the validator to reject
    assert float(at_line(frame, 22).price) == 0.0  # free CDs are valid
    assert pd.isna(at_line(frame, 23).timestamp)  # 1997013x
    assert float(at_line(frame, 24).price) == pytest.approx(-3.0)  # negative stays negative


def test_cdnow_with_and_without_header_agree():
    plain, headed = read_all("cdnow", CDNOW), read_all("cdnow", CDNOW_HEADER)
    assert plain["raw_line"].iloc[0] == 1 and headed["raw_line"].iloc[0] == 2
    pd.testing.assert_frame_equal(headed.drop(columns="raw_line"), plain.drop(columns="raw_line"))


def test_cdnow_leading_spaces_and_tabs():
    frame = read_all("cdnow", CDNOW_PADDED)
    assert frame["user_id"].tolist() == ["00001", "00002", "00002"]
    assert frame["quantity"].tolist() == ["1", "1", "5"]
    assert frame["price"].astype(float).tolist() == pytest.approx([11.77, 12.0, 15.4])


# ---------------------------------------------------------------- UCI Online Retail


def test_online_retail_purchases():
    frame = read_all("online_retail", UCI)
    first = at_line(frame, 2)
    assert (first.user_id, first.item_id, first.event_type, first.session_id) == ("17850", "85123A", "purchase", "536365")
    assert (first.quantity, first.price) == ("6", "2.55")
    assert first.timestamp == ts("2010-12-01 08:26")
    assert at_line(frame, 18).timestamp == ts("2010-12-03 14:26")  # month/day/year, not day/month
    assert at_line(frame, 9).item_id == "22748"  # quoted comma in Description
    assert frame["category"].isna().all()


def test_online_retail_cancellations_become_remove_from_cart():
    frame = read_all("online_retail", UCI)
    cancel = at_line(frame, 12)  # C536379,D,Discount,-1,...
    assert (cancel.event_type, cancel.quantity, cancel.session_id) == ("remove_from_cart", "1", "C536379")
    assert at_line(frame, 17).quantity == "4"  # C536548 ... -4
    odd = at_line(frame, 23)  # a "C" invoice with a positive quantity: negated, so rejected later
    assert (odd.event_type, odd.quantity) == ("remove_from_cart", "-5")


def test_online_retail_missing_customer_zero_and_negative_values():
    frame = read_all("online_retail", UCI)
    guest = at_line(frame, 14)  # 536414,22139,,56,...,0,,
    assert pd.isna(guest.user_id) and guest.price == "0" and guest.quantity == "56"
    assert at_line(frame, 17).user_id == "12472"  # Excel's 12472.0
    assert float(at_line(frame, 18).price) == 0.0 and at_line(frame, 18).user_id == "14911"
    assert at_line(frame, 19).quantity == "-30" and at_line(frame, 19).event_type == "purchase"
    assert float(at_line(frame, 20).price) == pytest.approx(-11062.06)  # "Adjust bad debt"


def test_online_retail_dates_iso_fallback_and_bad_dates():
    frame = read_all("online_retail", UCI)
    assert at_line(frame, 24).timestamp == ts("2011-12-09 13:02")
    assert pd.isna(at_line(frame, 25).timestamp)  # 13/45/2011


def test_online_retail_timezone_option():
    frame = read_all("online_retail", UCI, options={"timezone": "Europe/London"})
    assert at_line(frame, 2).timestamp == ts("2010-12-01 08:26")  # GMT in winter
    assert at_line(frame, 20).timestamp == ts("2011-08-12 13:51")  # BST in summer


def test_online_retail_latin1_description_is_harmless():
    frame = read_all("online_retail", UCI_LATIN1)
    assert frame["item_id"].tolist() == ["85123A", "22633"]


def test_online_retail_ii_column_names(tmp_path):
    path = tmp_path / "online_retail_II.csv"
    path.write_text(
        "Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country\n"
        "489434,85048,15CM CHRISTMAS GLASS BALL 20 LIGHTS,12,2009-12-01 07:45:00,6.95,13085.0,United Kingdom\n"
    )
    row = read_all("online_retail", path).iloc[0]
    assert (row.user_id, row.item_id, row.quantity, row.price) == ("13085", "85048", "12", "6.95")
    assert row.timestamp == ts("2009-12-01 07:45")


def test_online_retail_xlsx(tmp_path):
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    for fields in list(csv.reader(UCI.read_text().splitlines()))[:13]:
        sheet.append(fields)
    workbook.save(tmp_path / "Online Retail.xlsx")
    frame = read_all("online_retail", tmp_path / "Online Retail.xlsx", chunksize=5)
    assert at_line(frame, 12).event_type == "remove_from_cart"
    with pytest.raises(SourceError, match="no sheet 'Year 2011'"):
        read_all("online_retail", tmp_path / "Online Retail.xlsx", options={"sheet": "Year 2011"})


def test_online_retail_damaged_xlsx_is_a_clear_error(tmp_path):
    path = tmp_path / "Online Retail.xlsx"
    path.write_bytes(b"PK")  # a truncated download
    with pytest.raises(SourceError, match="cannot open the workbook"):
        read_all("online_retail", path)


# ---------------------------------------------------------------- generic


def test_generic_csv_mapping():
    frame = read_all("generic", GENERIC, options=GENERIC_OPTIONS)
    first = at_line(frame, 3)  # after a comment line and the header
    assert (first.user_id, first.item_id, first.event_type, first.session_id, first.category) == (
        "u1", "p10", "view", "s1", "toys",
    )
    assert first.timestamp == ts("2024-03-01 10:00:00")
    basket = at_line(frame, 4)
    assert (basket.event_type, basket.price, basket.quantity) == ("cart", "19.99", "2")
    assert at_line(frame, 5).event_type == "purchase"
    blank = at_line(frame, 7)  # an empty line is a row with nothing in it, rejected later
    assert pd.isna(blank.user_id) and pd.isna(blank.event_type)
    assert at_line(frame, 8).event_type == "unknown:share"
    assert pd.isna(at_line(frame, 10).timestamp)  # not ISO 8601 and no timestamp_format
    order = at_line(frame, 11)
    assert float(order.price) == -5.0 and order.quantity == "1.5"  # kept for the validator to reject
    assert at_line(frame, 12).quantity == "0"


def test_generic_timestamp_format_option():
    options = {**GENERIC_OPTIONS, "timestamp_format": "%d/%m/%Y %H:%M"}
    frame = read_all("generic", GENERIC, options=options)
    assert at_line(frame, 10).timestamp == ts("2024-03-02 08:00")
    assert pd.isna(at_line(frame, 3).timestamp)


def test_generic_parquet_with_unix_ms(tmp_path):
    path = tmp_path / "events.parquet"
    table = pa.table(
        {
            "uid": [1, 2, 3],
            "sku": ["a", "b", "c"],
            "kind": [0, 1, 9],
            "when": [1_700_000_000_123, 1_700_000_001_000, 1_700_000_002_000],
            "cost": [1.5, None, 0.0],
        }
    )
    pq.write_table(table, path, row_group_size=2)
    options = {
        "columns": {"user_id": "uid", "item_id": "sku", "event_type": "kind", "timestamp": "when", "price": "cost"},
        "event_map": {0: "view", 1: "purchase"},
        "timestamp_format": "unix_ms",
    }
    frame = read_all("generic", path, chunksize=2, options=options)
    assert frame["user_id"].tolist() == ["1", "2", "3"]
    assert frame["event_type"].tolist() == ["view", "purchase", "unknown:9"]
    assert frame["timestamp"].iloc[0] == ts("2023-11-14 22:13:20.123")
    assert frame["raw_line"].tolist() == [1, 2, 3]
    assert frame["session_id"].isna().all() and frame["quantity"].isna().all()


def test_generic_parquet_native_timestamps_and_canonical_names(tmp_path):
    path = tmp_path / "events.parquet"
    frame = pd.DataFrame(
        {
            "user_id": ["u1"],
            "item_id": ["i1"],
            "event_type": ["cart"],
            "timestamp": pd.to_datetime(["2024-01-01 12:00"]).tz_localize("Europe/Berlin"),
        }
    )
    frame.to_parquet(path)
    row = read_all("generic", path).iloc[0]  # no mapping needed: canonical names
    assert row.timestamp == ts("2024-01-01 11:00")
    assert row.event_type == "cart"


def test_generic_headerless_csv_by_position(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("7,42,purchase,1700000000\n8,43,view,1700000060\n")
    options = {
        "csv": {"header": None},
        "columns": {"user_id": 0, "item_id": 1, "event_type": 2, "timestamp": 3},
        "timestamp_format": "unix_s",
    }
    frame = read_all("generic", path, options=options)
    assert frame["user_id"].tolist() == ["7", "8"] and frame["raw_line"].tolist() == [1, 2]
    assert frame["timestamp"].tolist() == [ts("2023-11-14 22:13:20"), ts("2023-11-14 22:14:20")]


def test_generic_numeric_timestamps_need_a_format(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,event_type,timestamp\n7,42,purchase,1700000000\n")
    with pytest.raises(SourceError, match="timestamp_format") as error:
        read_all("generic", path)
    assert str(path) in str(error.value)


def test_generic_missing_mapped_column_names_file_column_and_fix():
    options = {**GENERIC_OPTIONS, "columns": {**GENERIC_OPTIONS["columns"], "user_id": "customer"}}
    with pytest.raises(SourceError) as error:
        read_source("generic", GENERIC, options=options)
    message = str(error.value)
    assert str(GENERIC) in message and "'customer'" in message
    assert "data.options.columns.user_id" in message
    assert isinstance(error.value, ValueError)


def test_generic_unmapped_required_column(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user,item_id,event_type,timestamp\n7,42,purchase,2024-01-01\n")
    with pytest.raises(SourceError, match="data.options.columns.user_id"):
        read_source("generic", path)


def test_generic_rejects_bad_options():
    with pytest.raises(SourceError, match="event_map"):
        read_source("generic", GENERIC, options={**GENERIC_OPTIONS, "event_map": {"open": "look"}})
    with pytest.raises(SourceError, match="chunksize"):
        read_source("generic", GENERIC, options={**GENERIC_OPTIONS, "csv": {"chunksize": 3}})
    with pytest.raises(SourceError, match="colums"):
        read_source("generic", GENERIC, options={"colums": {}})


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_missing_file_fails_at_once_naming_the_file(kind, tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(SourceError, match="not found") as error:
        read_source(kind, missing)  # no iteration needed
    assert str(missing) in str(error.value) and "data.path" in str(error.value)


def test_glob_without_matches(tmp_path):
    with pytest.raises(SourceError, match="no rees46 file matches"):
        read_source("rees46", str(tmp_path / "2019-*.csv"))


@pytest.mark.parametrize(
    ("kind", "source", "column", "replacement"),
    [
        ("retailrocket", RR_EVENTS, "visitorid", "visitor"),
        ("rees46", REES46_OCT, "event_time", "time"),
        ("online_retail", UCI, "InvoiceDate", "Date"),
    ],
)
def test_missing_column_names_file_and_column(kind, source, column, replacement, tmp_path):
    path = tmp_path / source.name
    text = source.read_text(encoding="utf-8")
    path.write_text(text.replace(column, replacement, 1), encoding="utf-8")
    with pytest.raises(SourceError) as error:
        read_source(kind, path)
    message = str(error.value)
    assert str(path) in message and repr(column) in message and "Fix:" in message
    assert "\n" not in message


def test_missing_property_column_names_the_property_file(tmp_path):
    props = tmp_path / "item_properties_part1.csv"
    props.write_text("timestamp,itemid,name,value\n1,2,categoryid,3\n")
    with pytest.raises(SourceError) as error:
        read_source("retailrocket", RR_EVENTS, options={"item_properties": str(props)})
    assert str(props) in str(error.value) and "'property'" in str(error.value)


def test_line_with_extra_fields_is_reported_not_truncated(tmp_path):
    path = tmp_path / "events.csv"
    lines = RR_EVENTS.read_text().splitlines()
    lines[9] += ",surplus"
    path.write_text("\n".join(lines) + "\n")
    chunks = read_source("retailrocket", path, chunksize=4)
    with pytest.raises(SourceError, match="line 10 has more fields") as error:
        list(chunks)
    assert str(path) in str(error.value)


def test_wrong_field_count_in_headerless_formats(tmp_path):
    path = tmp_path / "UserBehavior.csv"
    path.write_text("1,2268318,2520377,pv\n")
    with pytest.raises(SourceError, match="expected 5 fields"):
        read_source("taobao", path)
    cdnow = tmp_path / "CDNOW_master.txt"
    cdnow.write_text("00001 19970101 1\n")
    with pytest.raises(SourceError, match="expected 4 whitespace-separated fields"):
        read_source("cdnow", cdnow)


def test_empty_file(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("")
    with pytest.raises(SourceError, match="empty"):
        read_source("retailrocket", path)


def test_unknown_option_and_bad_chunksize():
    with pytest.raises(SourceError, match="item_propertys"):
        read_source("retailrocket", RR_EVENTS, options={"item_propertys": []})
    with pytest.raises(SourceError, match="chunksize"):
        read_source("taobao", TAOBAO, chunksize=0)


def test_fixture_copy_is_independent_of_location(tmp_path):
    # Paths may be str or Path and relative to anything: copy the fixture elsewhere.
    copy = shutil.copy(TAOBAO, tmp_path / "UB.csv")
    assert len(read_all("taobao", str(copy))) == 24


# ---------------------------------------------------------------- conversions explain what they cannot convert


def test_epoch_conversion_names_the_unit_it_looks_like():
    from shopsight.sources.canonical import epoch_to_utc

    raw = pd.Series(["1511544070", "1511544070000", "1511544070000000", "x1", None, "1e400"], dtype="string")
    stamps, problem = epoch_to_utc(raw, "s")
    assert stamps.iloc[0] == ts("2017-11-24 17:21:10") and stamps.iloc[1:].isna().all()
    assert pd.isna(problem.iloc[0]) and pd.isna(problem.iloc[4]), "a missing value is not a conversion problem"
    assert "out of range as unix seconds" in problem.iloc[1] and "looks like milliseconds" in problem.iloc[1]
    assert "looks like microseconds" in problem.iloc[2]
    assert problem.iloc[3] == "timestamp is not a number (expected unix seconds)"
    assert "looks like" not in problem.iloc[5]
    _, ms_problem = epoch_to_utc(pd.Series(["1433221332117000"], dtype="string"), "ms")
    assert "looks like microseconds" in ms_problem.iloc[0]
    stamps, ms_problem = epoch_to_utc(pd.Series(["1433221332", "1433221332117"], dtype="string"), "ms")
    assert pd.isna(stamps.iloc[0]) and "looks like unix seconds" in ms_problem.iloc[0]
    assert stamps.iloc[1] == ts("2015-06-02 05:02:12.117") and pd.isna(ms_problem.iloc[1])


def test_text_timestamps_explain_failures():
    from shopsight.sources.canonical import parse_timestamps

    raw = pd.Series(["2026-03-29 01:30", "2026-10-25 01:30", "2300-01-01", "soon", "", "2026-01-01 12:00"], dtype="string")
    stamps, problem = parse_timestamps(raw, None, timezone="Europe/London")
    assert stamps.iloc[5] == ts("2026-01-01 12:00") and stamps.iloc[:5].isna().all()
    assert problem.iloc[0].startswith("nonexistent local time in Europe/London")
    assert problem.iloc[1].startswith("ambiguous local time in Europe/London")
    assert problem.iloc[2].startswith("timestamp out of range")
    assert problem.iloc[3] == "unparseable timestamp (expected ISO 8601)"
    assert pd.isna(problem.iloc[4]) and pd.isna(problem.iloc[5])
    both, problem = parse_timestamps(pd.Series(["12/1/2010 8:26", "2010-12-01 08:26", "1/2/x"]), ("%m/%d/%Y %H:%M", None))
    assert both.iloc[0] == both.iloc[1] == ts("2010-12-01 08:26")
    assert problem.iloc[2] == "unparseable timestamp (expected %m/%d/%Y %H:%M or ISO 8601)"


def test_numbers_from_typed_columns_become_exact_text():
    from shopsight.sources.canonical import negate_number_text, number_text

    assert number_text(pd.Series([2.55, 0.1 + 0.2, None, float("inf")])).tolist() == ["2.55", "0.30000000000000004", pd.NA, "inf"]
    assert number_text(pd.Series([9223372036854775807])).tolist() == ["9223372036854775807"]
    assert negate_number_text(pd.Series(["-4", "5", "+3", "abc", None], dtype="string")).tolist() == ["4", "-5", "-3", "abc", pd.NA]


def test_nul_bytes_are_visible_not_cutting_fields(tmp_path):
    path = tmp_path / "UserBehavior.csv"
    path.write_bytes(b"1\x00x,2268318,2520377,pv,1511544070\n")
    frame = read_all("taobao", path)
    assert frame["user_id"].tolist() == ["1\u2400x"], "the whole field, its NUL shown as the NUL symbol"


def test_online_retail_ids_are_not_trimmed(tmp_path):
    path = tmp_path / "Online_Retail.csv"
    path.write_text(
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
        "536365,47503J ,BAG,6,12/1/2010 8:26,2.55,17850,United Kingdom\n"
    )
    assert read_all("online_retail", path)["item_id"].tolist() == ["47503J "]


# ---------------------------------------------------------------- sequence_text (user item item ... lines)

REALDATA_AMAZON = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "amazon"


def _sequence_file(tmp_path, text: str) -> Path:
    path = tmp_path / "seq.txt"
    path.write_text(text)
    return path


def test_sequence_text_one_event_per_item_end_aligned_days(tmp_path):
    path = _sequence_file(tmp_path, "1 10 11 12\n2 11 13\n\n3\n4 10 10 14 15\n")
    frame = read_all("sequence_text", path, chunksize=3)
    assert list(frame["user_id"]) == ["1"] * 3 + ["2"] * 2 + ["4"] * 4  # a blank line and a user without items: no event
    assert list(frame["item_id"]) == ["10", "11", "12", "11", "13", "10", "10", "14", "15"]
    assert list(frame["raw_line"]) == [1, 1, 1, 2, 2, 5, 5, 5, 5]
    assert set(frame["event_type"]) == {"purchase"}
    last = frame.groupby("user_id")["timestamp"].max()
    assert set(last) == {ts("2020-01-01")}  # every user's last item on end_date
    user4 = frame[frame["user_id"] == "4"]["timestamp"]
    assert list(user4.diff().dropna()) == [pd.Timedelta(days=1)] * 3  # one day apart, in file order
    assert frame["session_id"].isna().all() and frame["price"].isna().all()


def test_sequence_text_chunks_never_exceed_chunksize_and_agree(tmp_path):
    path = _sequence_file(tmp_path, "".join(f"{u} " + " ".join(str(i) for i in range(u, u + 7)) + "\n" for u in range(1, 6)))
    small = list(read_source("sequence_text", path, chunksize=4))
    assert all(0 < len(c) <= 4 for c in small) and len(small) > 1
    whole = pd.concat(list(read_source("sequence_text", path, chunksize=1000)), ignore_index=True)
    pd.testing.assert_frame_equal(pd.concat(small, ignore_index=True), whole)
    for chunk in small:
        assert list(chunk.columns) == [*CANONICAL_COLUMNS, "raw_line", "timestamp_problem"]
        assert str(chunk["timestamp"].dtype) == "datetime64[ns, UTC]" and chunk["item_id"].dtype == "string"


def test_sequence_text_options(tmp_path):
    path = _sequence_file(tmp_path, "u1 a b\n")
    frame = read_all("sequence_text", path, options={"event_type": "view", "end_date": "2021-06-30"})
    assert list(frame["event_type"]) == ["view", "view"]
    assert list(frame["timestamp"]) == [ts("2021-06-29"), ts("2021-06-30")]
    with pytest.raises(SourceError, match="event_type"):
        read_all("sequence_text", path, options={"event_type": "click"})
    with pytest.raises(SourceError, match="end_date"):
        read_all("sequence_text", path, options={"end_date": "not a date"})
    with pytest.raises(SourceError, match="not found"):
        read_all("sequence_text", tmp_path / "missing.txt")


def test_sequence_text_gzip(tmp_path):
    import gzip

    path = tmp_path / "seq.txt.gz"
    path.write_bytes(gzip.compress(b"1 5 6\n2 6 7 8\n"))
    assert len(read_all("sequence_text", path)) == 5


def test_sequence_text_ingests_and_validates(tmp_path):
    # the canonical events pass the ingest validator: no row rejected
    from shopsight.schema import CANONICAL_COLUMNS as columns

    path = _sequence_file(tmp_path, "1 10 11 12\n2 11 13\n")
    frame = read_all("sequence_text", path)
    assert frame[list(columns)].notna()[["user_id", "item_id", "event_type", "timestamp"]].all().all()
    assert frame["event_type"].isin(EVENT_TYPES).all()


def test_sequence_text_reads_the_amazon_file_when_present():
    path = REALDATA_AMAZON / "Toys_and_Games.txt"
    if not path.exists():
        pytest.skip(f"{path} absent (the real-data folder ../shared/realdata is not on this machine)")
    frame = read_all("sequence_text", path)
    assert len(frame) == 167_597 and frame["user_id"].nunique() == 19_412 and frame["item_id"].nunique() == 11_924


# --- the CSV reader: Arrow for plain UTF-8, pandas from the first irregular batch on -------------------

_PLAIN_LINES = ["a,b,c"] + [f"{i},{i * 2},{i * 3}" for i in range(120)]


def _irregular(line_no: int, text: str) -> list[str]:
    lines = list(_PLAIN_LINES)
    lines[line_no] = text
    return lines


@pytest.mark.parametrize(
    "lines",
    [
        _PLAIN_LINES,
        _irregular(60, ""),  # a blank line is an all-missing row
        _irregular(70, "1,2"),  # a short row: missing trailing fields
        _irregular(80, '1,"x\ny",3'),  # a line break inside quotes
        _irregular(90, "1,2\x00,3"),  # a NUL byte
        _irregular(50, "1,2,3,4"),  # one field too many: the pandas reader's error
    ],
    ids=["plain", "blank", "short", "quoted-newline", "nul", "extra-field"],
)
def test_arrow_and_pandas_csv_readers_give_the_same_chunks(tmp_path, monkeypatch, lines):
    from shopsight.sources import reading

    monkeypatch.setattr(reading, "_ARROW_BLOCK", 64)  # many small batches: the hand-over happens mid-file
    path = tmp_path / "f.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def read(reader):
        try:
            chunks = list(reader(path, columns=["a", "b", "c"], header_lines=1, chunksize=7))
        except SourceError as exc:
            return str(exc), []
        assert all(len(chunk) <= 7 for chunk in chunks)
        return pd.concat(chunks, ignore_index=True), [str(chunk.dtypes.to_dict()) for chunk in chunks]

    new, new_dtypes = read(reading.iter_csv_chunks)
    old, old_dtypes = read(reading._iter_pandas_csv_chunks)
    if isinstance(old, str):
        assert new == old
    else:
        pd.testing.assert_frame_equal(new, old)
        assert set(new_dtypes) == set(old_dtypes)


def test_a_plain_utf8_csv_is_read_by_arrow(tmp_path, monkeypatch):
    from shopsight.sources import reading

    def no_pandas(*args, **kwargs):
        raise AssertionError("the pandas reader was used for a plain CSV")

    monkeypatch.setattr(reading, "_iter_pandas_csv_chunks", no_pandas)
    path = tmp_path / "f.csv"
    path.write_text("\n".join(_PLAIN_LINES) + "\n", encoding="utf-8")
    chunks = list(reading.iter_csv_chunks(path, columns=["a", "b", "c"], header_lines=1, chunksize=50))
    frame = pd.concat(chunks, ignore_index=True)
    assert len(frame) == 120 and frame["raw_line"].tolist() == list(range(2, 122))
    assert frame.loc[0, "c"] == "0" and frame.loc[119, "b"] == "238"
