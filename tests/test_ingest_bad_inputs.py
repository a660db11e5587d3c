"""Bad inputs through the whole ingest: every row read is a valid event, a counted duplicate or a reject
with a reason that names the cause; every file-level error names the file and the fix; nothing is
altered on the way."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from shopsight.config import Params
from shopsight.ingest import IngestError, ingest, load_events
from shopsight.schema import MAX_ID_LENGTH
from shopsight.sources import SourceError, read_source

FIXTURES = Path(__file__).parent / "fixtures" / "sources"
TAOBAO = FIXTURES / "taobao" / "UserBehavior.csv"
HEADER = "uid,sku,action,ts,price,qty\n"
GOOD = "u0,a,view,2026-01-05T10:00:00Z,1,1\n"  # one valid row keeps a file from failing as all-rejected
COLUMNS = {"user_id": "uid", "item_id": "sku", "event_type": "action", "timestamp": "ts", "price": "price", "quantity": "qty"}


def _params(path, source="generic", ingest_options=None, **options) -> Params:
    if source == "generic":
        options = {"columns": COLUMNS, **options}
    return Params.model_validate(
        {"data": {"source": source, "path": str(path), "options": options, "chunksize": options.pop("chunksize", 1000)},
         "ingest": ingest_options or {}}
    )


def _ingest(tmp_path, monkeypatch, text: str | bytes, name="events.csv", **kwargs):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    report = ingest(_params(path, **kwargs))
    assert report.rows_in == report.rows_out + report.rejected + report.duplicates_removed, "a row went missing"
    return report, pd.read_parquet(tmp_path / "data/rejects.parquet")


def _reason(rejects: pd.DataFrame, line: int) -> str:
    rows = rejects[rejects["raw_line"] == str(line)]
    assert len(rows) == 1, f"line {line} should be rejected once, rejects: {rejects[['raw_line', 'reason']].to_dict('records')}"
    return rows["reason"].iloc[0]


# ---------------------------------------------------------------- prices and quantities


def test_infinite_prices_are_rejected_as_infinite(tmp_path, monkeypatch):
    rows = ["inf", "Infinity", "1e400", "-inf"]
    text = HEADER + GOOD + "".join(f"u{i},a,view,2026-01-05T10:00:00Z,{p},1\n" for i, p in enumerate(rows))
    report, rejects = _ingest(tmp_path, monkeypatch, text)
    assert report.rows_out == 1 and report.rejected == 4
    for line in (3, 4, 5, 6):
        assert "infinite price" in _reason(rejects, line)
    assert "negative price" in _reason(rejects, 6)
    assert rejects.set_index("raw_line").loc["5", "price"] == "1e400", "the reject keeps the text as written"
    assert load_events()["price"].tolist() == [1.0]


def test_prices_that_are_not_numbers_are_rejected_not_nan(tmp_path, monkeypatch):
    rows = ["abc", '"12,50"', "$5", "0x10", "nan", "1_000"]
    text = HEADER + GOOD + "".join(f"u{i},a,view,2026-01-05T10:00:00Z,{p},1\n" for i, p in enumerate(rows))
    report, rejects = _ingest(tmp_path, monkeypatch, text)
    assert report.rejected == len(rows)
    for line in range(3, 3 + len(rows)):
        assert _reason(rejects, line) == "price is not a number"
    assert sorted(rejects["price"]) == sorted(["abc", "12,50", "$5", "0x10", "nan", "1_000"])


@pytest.mark.parametrize(
    ("quantity", "reason"),
    [
        ("2.5", "quantity is not an integer"),
        ("abc", "quantity is not a number"),
        ("NaN", "quantity is not a number"),
        ("1e20", "quantity out of range"),
        ("9223372036854775808", "quantity out of range"),
        ("-9223372036854775809", "quantity out of range"),
        ("inf", "quantity out of range"),
        ("0", "quantity < 1"),
    ],
)
def test_bad_quantities_are_rejected_with_their_reason(tmp_path, monkeypatch, quantity, reason):
    text = HEADER + GOOD + f"u1,a,purchase,2026-01-05T10:00:00Z,1,{quantity}\n"
    report, rejects = _ingest(tmp_path, monkeypatch, text)
    assert report.rejected == 1
    assert reason in _reason(rejects, 3)
    assert rejects["quantity"].iloc[0] == quantity


def test_missing_quantity_defaults_to_one_and_exact_quantities_are_kept(tmp_path, monkeypatch):
    text = HEADER + "u1,a,purchase,2026-01-05T10:00:00Z,1,\nu2,b,purchase,2026-01-05T10:00:00Z,1,2.0\n" \
        "u3,c,purchase,2026-01-05T10:00:00Z,1,9223372036854775807\nu4,d,purchase,2026-01-05T10:00:00Z,1, 3 \n"
    report, _ = _ingest(tmp_path, monkeypatch, text)
    assert report.rejected == 0
    events = load_events().set_index("user_id")
    assert events.loc["u1", "quantity"] == 1 and events.loc["u2", "quantity"] == 2 and events.loc["u4", "quantity"] == 3
    assert events.loc["u3", "quantity"] == 9223372036854775807, "a large quantity is exact, not rounded through a float"


# ---------------------------------------------------------------- ids


def test_nul_bytes_do_not_cut_ids(tmp_path, monkeypatch):
    text = (HEADER + "u1,a,view,2026-01-05T10:00:00Z,1,1\nu1\0x,a,view,2026-01-05T10:05:00Z,1,1\n").encode()
    report, rejects = _ingest(tmp_path, monkeypatch, text)
    assert (report.rows_out, report.rejected) == (1, 1)
    assert "user_id contains a NUL byte" in _reason(rejects, 3)
    assert load_events()["user_id"].tolist() == ["u1"]


def test_padded_ids_are_rejected_not_merged(tmp_path, monkeypatch):
    text = HEADER + "u1,a,view,2026-01-05T10:00:00Z,1,1\n u1,a,view,2026-01-05T10:05:00Z,1,1\nu1,a ,view,2026-01-05T10:06:00Z,1,1\n"
    report, rejects = _ingest(tmp_path, monkeypatch, text)
    assert (report.rows_out, report.rejected) == (1, 2)
    assert "user_id has leading or trailing whitespace" in _reason(rejects, 3)
    assert "item_id has leading or trailing whitespace" in _reason(rejects, 4)
    assert rejects.set_index("raw_line").loc["3", "user_id"] == " u1", "the reject keeps the id as written"


def test_overlong_and_control_character_ids_are_rejected(tmp_path, monkeypatch):
    huge = "x" * 100_000
    text = HEADER + GOOD + f"{huge},a,view,2026-01-05T10:00:00Z,1,1\n" + f"u1,{'i' * (MAX_ID_LENGTH + 1)},view,2026-01-05T10:00:00Z,1,1\n" \
        + '"u\t1",a,view,2026-01-05T10:00:00Z,1,1\n' + f"u2,{'i' * MAX_ID_LENGTH},view,2026-01-05T10:00:00Z,1,1\n"
    report, rejects = _ingest(tmp_path, monkeypatch, text)
    assert (report.rows_out, report.rejected) == (2, 3)
    assert f"user_id longer than {MAX_ID_LENGTH} characters" in _reason(rejects, 3)
    assert f"item_id longer than {MAX_ID_LENGTH} characters" in _reason(rejects, 4)
    assert "user_id contains a control character" in _reason(rejects, 5)


# ---------------------------------------------------------------- timestamps


def test_out_of_range_timestamps_say_so(tmp_path, monkeypatch):
    text = HEADER + GOOD + "u1,a,view,2262-05-01T00:00:00Z,1,1\nu2,a,view,2026-13-01T00:00:00Z,1,1\nu3,a,view,,1,1\n"
    report, rejects = _ingest(tmp_path, monkeypatch, text)
    assert "timestamp out of range" in _reason(rejects, 3)
    assert "unparseable timestamp (expected ISO 8601)" in _reason(rejects, 4)
    assert _reason(rejects, 5) == "missing timestamp"


def test_epoch_milliseconds_read_as_seconds_say_which_unit(tmp_path, monkeypatch):
    lines = TAOBAO.read_text().splitlines()[:3] + ["9,2268318,2520377,pv,1511544070000", "9,2268318,2520377,pv,1511544070000000"]
    report, rejects = _ingest(tmp_path, monkeypatch, "\n".join(lines) + "\n", name="UserBehavior.csv", source="taobao")
    assert "out of range as unix seconds" in _reason(rejects, 4) and "looks like milliseconds" in _reason(rejects, 4)
    assert "looks like microseconds" in _reason(rejects, 5)


def test_daylight_saving_gaps_and_repeats_say_so(tmp_path, monkeypatch):
    text = (
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
        "536365,85123A,HEART,6,3/27/2011 0:30,2.55,17850,United Kingdom\n"
        "536366,85123A,HEART,6,3/27/2011 1:30,2.55,17850,United Kingdom\n"  # clocks go from 1:00 to 2:00
        "536367,85123A,HEART,6,10/30/2011 1:30,2.55,17850,United Kingdom\n"  # 1:00-2:00 happens twice
    )
    report, rejects = _ingest(tmp_path, monkeypatch, text, source="online_retail", timezone="Europe/London")
    assert report.rows_out == 1
    assert "nonexistent local time in Europe/London" in _reason(rejects, 3)
    assert "ambiguous local time in Europe/London" in _reason(rejects, 4)


# ---------------------------------------------------------------- whole-file outcomes


def test_all_rejected_fails_naming_reasons_and_rejects_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "events.csv"
    path.write_text(HEADER + "u1,a,teleport,2026-01-05T10:00:00Z,1,1\nu2,a,view,yesterday,1,1\nu3,a,teleport,2026-01-05T10:00:00Z,1,1\n")
    with pytest.raises(IngestError) as error:
        ingest(_params(path))
    message = str(error.value)
    assert "all 3 rows were rejected" in message and "unknown event_type" in message and "(2)" in message
    assert "data/rejects.parquet" in message
    assert len(pd.read_parquet(tmp_path / "data/rejects.parquet")) == 3, "the rejects are there to look at"
    assert not (tmp_path / "data/events.parquet").exists()


def test_header_only_file_fails(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "events.csv"
    path.write_text(HEADER)
    with pytest.raises(IngestError, match="no data rows"):
        ingest(_params(path))


def test_cli_exits_non_zero_when_nothing_is_valid(tmp_path, monkeypatch):
    from shopsight.cli import app

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "events.csv"
    path.write_text(HEADER + "u1,a,teleport,2026-01-05T10:00:00Z,1,1\n")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"source": "generic", "path": str(path), "options": {"columns": COLUMNS}}}))
    result = CliRunner().invoke(app, ["ingest", "--params", str(params)])
    assert result.exit_code != 0
    assert "rejected" in result.output and "unknown event_type" in result.output


def test_drop_duplicates_false_keeps_duplicates(tmp_path, monkeypatch):
    text = HEADER + GOOD + GOOD + "u1,b,view,2026-01-05T10:00:00Z,1,1\n"
    report, _ = _ingest(tmp_path, monkeypatch, text, ingest_options={"drop_duplicates": False})
    assert (report.rows_out, report.duplicates_removed) == (3, 0)
    report, _ = _ingest(tmp_path, monkeypatch, text)
    assert (report.rows_out, report.duplicates_removed) == (2, 1)


def test_rejects_are_written_chunk_by_chunk(tmp_path, monkeypatch):
    # Memory must not grow with the number of rejects: each chunk's rejects go to disk as they come.
    text = HEADER + GOOD + "".join(f"u{i},a,teleport,2026-01-05T10:00:00Z,1,1\n" for i in range(9))
    report, rejects = _ingest(tmp_path, monkeypatch, text, chunksize=2)
    assert report.rejected == 9 and len(rejects) == 9
    assert pq.ParquetFile(tmp_path / "data/rejects.parquet").num_row_groups == 5
    assert json.loads((tmp_path / "metrics/ingest.json").read_text())["rejected"] == 9


# ---------------------------------------------------------------- file-level errors name the cause


def test_directory_as_path_says_it_is_a_directory(tmp_path):
    with pytest.raises(SourceError, match="is a directory"):
        read_source("generic", tmp_path, options={"columns": COLUMNS})


def test_gzip_bytes_in_a_csv_say_rename(tmp_path):
    path = tmp_path / "events.csv"
    path.write_bytes(gzip.compress((HEADER + GOOD).encode()))
    with pytest.raises(SourceError) as error:
        read_source("generic", path, options={"columns": COLUMNS})
    assert "gzip-compressed" in str(error.value) and "events.csv.gz" in str(error.value)


def test_gz_name_without_gzip_bytes(tmp_path):
    path = tmp_path / "events.csv.gz"
    path.write_text(HEADER + GOOD)
    with pytest.raises(SourceError, match="not gzip-compressed"):
        read_source("generic", path, options={"columns": COLUMNS})


def test_zip_with_several_files_is_a_clear_error(tmp_path):
    path = tmp_path / "events.csv.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.csv", HEADER + GOOD)
        archive.writestr("b.csv", HEADER + GOOD)
    with pytest.raises(SourceError, match="zip archive with 2 files"):
        read_source("generic", path, options={"columns": COLUMNS})


def test_compressed_csv_is_read(tmp_path, monkeypatch):
    path = tmp_path / "events.csv.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("events.csv", HEADER + GOOD)
    frame = pd.concat(list(read_source("generic", path, options={"columns": COLUMNS})))
    assert frame["user_id"].tolist() == ["u0"]


def test_unterminated_quote_reports_its_line(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(HEADER + GOOD * 4 + 'u9,"a,view,2026-01-05T10:00:00Z,1,1\n' + GOOD * 3)
    with pytest.raises(SourceError) as error:
        list(read_source("generic", path, chunksize=1000, options={"columns": COLUMNS}))
    assert "line 6" in str(error.value) and "quote" in str(error.value)


def test_undecodable_text_names_the_line_and_the_option(tmp_path):
    path = tmp_path / "events.csv"
    path.write_bytes((HEADER + GOOD * 3).encode() + "J\xf6rg,a,view,2026-01-05T10:00:00Z,1,1\n".encode("latin-1"))
    with pytest.raises(SourceError) as error:
        list(read_source("generic", path, options={"columns": COLUMNS}))
    assert "line 5" in str(error.value) and "encoding" in str(error.value)
    frame = pd.concat(list(read_source("generic", path, options={"columns": COLUMNS, "csv": {"encoding": "auto"}})))
    assert frame["user_id"].iloc[-1] == "Jörg"


def test_empty_and_blank_files_are_clear_errors(tmp_path):
    for content in ("", "\n\n  \n"):
        path = tmp_path / "events.csv"
        path.write_text(content)
        with pytest.raises(SourceError, match="empty"):
            read_source("generic", path, options={"columns": COLUMNS})


def test_duplicate_header_names_are_an_error(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("uid,sku,action,ts,price,qty,uid\n" + GOOD.strip() + ",u9\n")
    with pytest.raises(SourceError, match="'uid' more than once"):
        read_source("generic", path, options={"columns": COLUMNS})


def test_wrong_delimiter_names_the_likely_separator(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(HEADER.replace(",", ";") + GOOD.replace(",", ";"))
    with pytest.raises(SourceError, match="separated by ';'"):
        read_source("generic", path, options={"columns": COLUMNS})
    tabs = tmp_path / "UserBehavior.csv"
    tabs.write_text(TAOBAO.read_text().replace(",", "\t"))
    with pytest.raises(SourceError, match="separated by tabs"):
        read_source("taobao", tabs)


def test_bom_and_crlf_are_read_exactly(tmp_path, monkeypatch):
    text = ("\ufeff" + HEADER + GOOD + "u1,b,view,2026-01-05T10:01:00Z,1,1\n").replace("\n", "\r\n")
    report, _ = _ingest(tmp_path, monkeypatch, text.encode("utf-8"))
    assert (report.rows_out, report.rejected) == (2, 0)
    assert sorted(load_events()["item_id"]) == ["a", "b"], "no stray carriage return in the last field"


def test_short_lines_are_rejected_not_dropped(tmp_path, monkeypatch):
    text = HEADER + GOOD + "u1,a\n"
    report, rejects = _ingest(tmp_path, monkeypatch, text)
    assert report.rejected == 1 and "unknown event_type" in _reason(rejects, 3) and "missing timestamp" in _reason(rejects, 3)


# ---------------------------------------------------------------- formats


def test_gzipped_taobao_keeps_its_first_event(tmp_path, monkeypatch):
    path = tmp_path / "UserBehavior.csv.gz"
    path.write_bytes(gzip.compress(TAOBAO.read_bytes()))
    plain = pd.concat(list(read_source("taobao", TAOBAO)), ignore_index=True)
    packed = pd.concat(list(read_source("taobao", path)), ignore_index=True)
    pd.testing.assert_frame_equal(packed, plain)
    assert packed["raw_line"].iloc[0] == 1


def test_taobao_first_row_without_digits_is_data_not_a_header(tmp_path, monkeypatch):
    text = "abc,def,ghi,pv,xyz\n" + TAOBAO.read_text()
    report, rejects = _ingest(tmp_path, monkeypatch, text, name="UserBehavior.csv", source="taobao")
    assert report.rows_in == 25, "the first line is counted"
    assert "timestamp is not a number" in _reason(rejects, 1)
    headed = tmp_path / "UserBehavior_header.csv"
    headed.write_text("User ID,Item ID,Category ID,Behavior type,Timestamp\n" + TAOBAO.read_text())
    assert pd.concat(list(read_source("taobao", headed)))["raw_line"].iloc[0] == 2, "a real header is skipped"


def test_online_retail_latin1_customer_ids_are_decoded(tmp_path):
    path = tmp_path / "Online_Retail.csv"
    path.write_bytes(
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
        "536365,85123A,CAF\xc9 HEART,6,12/1/2010 8:26,2.55,J\xf6rg,Deutschland\n".encode("cp1252")
    )
    frame = pd.concat(list(read_source("online_retail", path)))
    assert frame["user_id"].tolist() == ["Jörg"]


def test_online_retail_reads_the_parquet_release(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    table = pa.table(
        {
            "Invoice": ["489434", "489434", "C489449"],
            "StockCode": ["85048", "79323P", "22087"],
            "Description": ["BALL", "LIGHTS", "PAPER"],
            "Quantity": pa.array([12, 6, -12], pa.int64()),
            "InvoiceDate": ["2009-12-01 07:45:00", "2009-12-01 07:45:00", "2009-12-01 10:33:00"],
            "Price": [6.95, 0.1 + 0.2, 2.95],
            "Customer ID": [13085.0, None, 16321.0],
            "Country": ["United Kingdom"] * 3,
        }
    )
    # the release is named .parquet, but a copy without the suffix is recognised by its magic bytes
    path = tmp_path / "online_retail_ii"
    pq.write_table(table, path)
    frame = pd.concat(list(read_source("online_retail", path)), ignore_index=True)
    assert frame["user_id"].tolist()[::2] == ["13085", "16321"] and pd.isna(frame["user_id"].iloc[1])
    assert frame["price"].tolist() == ["6.95", "0.30000000000000004", "2.95"], "prices exact"
    assert frame["quantity"].tolist() == ["12", "6", "12"] and frame["event_type"].iloc[2] == "remove_from_cart"
    assert frame["raw_line"].tolist() == [1, 2, 3]
    report = ingest(_params(path, source="online_retail"))
    assert (report.rows_in, report.rows_out, report.rejected) == (3, 2, 1)


def test_generic_constant_event_type_for_a_purchase_table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "orders.csv"
    path.write_text("customer,product,ordered_at,amount\nc1,p1,2026-01-05T10:00:00Z,9.5\nc2,p2,2026-01-06T10:00:00Z,3\n")
    options = {"columns": {"user_id": "customer", "item_id": "product", "timestamp": "ordered_at", "price": "amount"},
               "event_type_constant": "purchase"}
    params = Params.model_validate({"data": {"source": "generic", "path": str(path), "options": options}})
    report = ingest(params)
    assert (report.rows_out, report.rejected) == (2, 0)
    assert set(load_events()["event_type"]) == {"purchase"}
    with pytest.raises(SourceError, match="event_type_constant must be one of"):
        read_source("generic", path, options={**options, "event_type_constant": "order"})
    with pytest.raises(SourceError, match="event_type_constant"):
        read_source("generic", path, options={"columns": options["columns"]})  # the error suggests the option


def _parquet(tmp_path, **columns) -> Path:
    base = {"uid": ["u1", "u2"], "sku": ["a", "b"], "action": ["view", "purchase"],
            "ts": ["2026-01-05T10:00:00Z", "2026-01-05T11:00:00Z"], "price": [1.5, 2.0], "qty": [1, 2]}
    path = tmp_path / "events.parquet"
    pq.write_table(pa.table({**base, **columns}), path)
    return path


@pytest.mark.parametrize("values", [pa.array([b"u1", b"\xff"], pa.binary()), pa.array([{"a": 1}, {"a": 2}])], ids=["binary", "struct"])
def test_parquet_ids_that_are_not_text_are_a_clear_error(tmp_path, values):
    with pytest.raises(SourceError, match="column 'uid' holds .* values, not text"):
        read_source("generic", _parquet(tmp_path, uid=values), options={"columns": COLUMNS})


def test_parquet_times_beyond_the_nanosecond_range_are_rejected_with_reason(tmp_path, monkeypatch):
    import datetime

    monkeypatch.chdir(tmp_path)
    times = pa.array([datetime.datetime(2026, 1, 5), datetime.datetime(2300, 1, 1)], pa.timestamp("s"))
    report = ingest(_params(_parquet(tmp_path, ts=times)))
    assert (report.rows_out, report.rejected) == (1, 1)
    assert report.rejects_by_reason == {"timestamp out of range (representable: 1677-09-21..2262-04-11)": 1}
