"""Locating source files, opening them (compressed or not, in the right encoding) and streaming CSVs
in chunks with the line number of every row.

A plain UTF-8 CSV is parsed by Arrow's multi-threaded reader (about 10x pandas, text straight into Arrow
strings); from the first irregular batch on (a row with another field count, text that is not UTF-8, a
NUL byte, a line break inside a field) and for any other encoding or read option, pandas' parser reads,
and its line numbers and messages are the contract both follow."""

from __future__ import annotations

import bz2
import codecs
import csv
import glob
import gzip
import io
import lzma
import re
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from shopsight.sources import SourceError

RAW_LINE = "raw_line"
# Text columns are Arrow-backed: string checks and conversions then run in Arrow's kernels, not per row in Python.
TEXT = pd.StringDtype("pyarrow")
# An extra trailing column catches lines with more fields than the header: pandas' chunked
# parser would otherwise truncate them without a word.
_OVERFLOW = "__overflow__"
DEFAULT_ENCODING = "utf-8-sig"  # Excel exports start with a byte-order mark
AUTO_ENCODING = "auto"  # UTF-8 if the whole file decodes as UTF-8, else cp1252 (else Latin-1)
# pandas' C parser ends a field at a NUL byte (silently cutting "u1\0x" to "u1"); NULs are read
# as this visible symbol instead, and the validator rejects any field that holds it.
NUL_SENTINEL = "\u2400"
PARQUET_MAGIC = b"PAR1"
_READ_BLOCK = 1 << 20
# magic bytes -> (compression, suffixes that announce it)
_COMPRESSIONS: dict[bytes, tuple[str, tuple[str, ...]]] = {
    b"\x1f\x8b": ("gzip", (".gz", ".gzip")),
    b"BZh": ("bzip2", (".bz2",)),
    b"\xfd7zXZ\x00": ("xz", (".xz",)),
    b"PK\x03\x04": ("zip", (".zip",)),
}
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# what a damaged compressed stream raises while being read
STREAM_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile)


def check_options(kind: str, options: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Fail on an option the adapter does not know (a typo would otherwise be ignored)."""
    allowed = sorted(allowed)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise SourceError(
            f"unknown option(s) {', '.join(unknown)} for data.source={kind}; allowed: "
            f"{', '.join(allowed) or 'none'}. Fix: correct data.options in params.yaml."
        )


def resolve_paths(path: str | Path | Iterable[str | Path], *, kind: str, option: str = "data.path") -> list[Path]:
    """Expand a path, a list of paths or a glob into existing files, in a stable order."""
    if isinstance(path, (str, Path)):
        candidates = [path]
    else:
        candidates = list(path)
    if not candidates:
        raise SourceError(f"no {kind} file given. Fix: set {option} in params.yaml.")
    files: list[Path] = []
    for candidate in candidates:
        text = str(candidate)
        if glob.has_magic(text):
            matches = sorted(glob.glob(text))
            if not matches:
                raise SourceError(f"{text}: no {kind} file matches this pattern. Fix: correct {option} in params.yaml.")
            files.extend(Path(m) for m in matches)
        else:
            files.append(Path(text))
    for file in files:
        if file.is_dir():
            raise SourceError(
                f"{file}: is a directory, not a {kind} file. Fix: point {option} in params.yaml at the file(s) "
                f"inside it (a path, a list or a glob such as {file}/*.csv)."
            )
        if not file.is_file():
            raise SourceError(f"{file}: {kind} file not found. Fix: download it there or correct {option} in params.yaml.")
    return files


def file_magic(path: Path, size: int = 8) -> bytes:
    """The first bytes of a file (to recognise compression or Parquet whatever the file is named)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError as exc:
        raise SourceError(f"{path}: cannot open the file ({exc}). Fix: check the path and its permissions.") from None


def is_parquet(path: Path) -> bool:
    return file_magic(path, 4) == PARQUET_MAGIC


def _compression(path: Path) -> str | None:
    """The compression of the file, from its magic bytes; a name that disagrees with them is an error."""
    magic = file_magic(path)
    suffix = path.suffix.lower()
    if magic.startswith(_ZSTD_MAGIC):
        raise SourceError(f"{path}: the file looks zstd-compressed. Fix: decompress it (zstd -d) and point data.path at the result.")
    for prefix, (name, suffixes) in _COMPRESSIONS.items():
        if magic.startswith(prefix):
            if suffix not in suffixes:
                raise SourceError(
                    f"{path}: the file looks {name}-compressed but is named {path.name}. "
                    f"Fix: rename it to {path.name}{suffixes[0]} (it is then read compressed) or decompress it."
                )
            return name
    announced = next((name for name, suffixes in _COMPRESSIONS.values() if suffix in suffixes), None)
    if announced is not None:
        raise SourceError(
            f"{path}: named {suffix} but not {announced}-compressed. Fix: rename it without {suffix} or re-compress it."
        )
    return None


def open_binary(path: Path) -> IO[bytes]:
    """The file's bytes, decompressed when it is gzip/bzip2/xz/zip (a zip must hold one file)."""
    compression = _compression(path)
    try:
        if compression == "gzip":
            return gzip.open(path, "rb")
        if compression == "bzip2":
            return bz2.open(path, "rb")
        if compression == "xz":
            return lzma.open(path, "rb")
        if compression == "zip":
            archive = zipfile.ZipFile(path)
            members = [m for m in archive.namelist() if not m.endswith("/")]
            if len(members) != 1:
                raise SourceError(
                    f"{path}: a zip archive with {len(members)} files ({', '.join(members[:5])}). "
                    f"Fix: extract it and point data.path at the file(s) inside."
                )
            return archive.open(members[0])
        return open(path, "rb")
    except (OSError, zipfile.BadZipFile) as exc:
        raise SourceError(f"{path}: cannot open the file ({exc}). Fix: check the file and its permissions.") from None


def check_parquet_types(file: Path, schema, columns: Iterable[str], *, kind: str) -> None:
    """Fail naming the column when a mapped Parquet column holds binary or nested values: turning
    bytes or structs into text would invent ids."""
    import pyarrow as pa

    for name in columns:
        arrow_type = schema.field(name).type
        if pa.types.is_dictionary(arrow_type):
            arrow_type = arrow_type.value_type
        if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type) or pa.types.is_fixed_size_binary(arrow_type) or pa.types.is_nested(arrow_type):
            raise SourceError(
                f"{file}: column {name!r} holds {arrow_type} values, not text, numbers or times, for data.source={kind}. "
                f"Fix: store it as a string (or number) column, or map another column in data.options.columns."
            )


def detect_encoding(path: Path) -> str:
    """utf-8-sig when the whole file decodes as UTF-8; else cp1252 (Windows exports), else Latin-1."""
    for encoding in ("utf-8-sig", "cp1252"):
        decoder = codecs.getincrementaldecoder(encoding)()
        try:
            with open_binary(path) as handle:
                while block := handle.read(_READ_BLOCK):
                    decoder.decode(block)
                decoder.decode(b"", final=True)
            return encoding
        except UnicodeDecodeError:
            continue
        except STREAM_ERRORS as exc:
            raise SourceError(f"{path}: unreadable ({exc}). Fix: repair or re-download the file.") from None
    return "latin-1"  # every byte sequence is Latin-1


class _NulSafeText(io.TextIOBase):
    """A text stream over the (decompressed) bytes that reads NUL as NUL_SENTINEL (see there)."""

    def __init__(self, binary: IO[bytes], encoding: str, errors: str) -> None:
        self._text = io.TextIOWrapper(binary, encoding=encoding, errors=errors, newline="")

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> str:
        return self._text.read(size).replace("\0", NUL_SENTINEL)

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
        return self._text.readline(size).replace("\0", NUL_SENTINEL)

    def __next__(self) -> str:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def close(self) -> None:
        self._text.close()
        super().close()


def open_text(path: Path, *, encoding: str = DEFAULT_ENCODING, errors: str = "strict") -> _NulSafeText:
    """The file as text: decompressed, decoded (encoding "auto" detects it), NUL bytes made visible."""
    if encoding == AUTO_ENCODING:
        encoding = detect_encoding(path)
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise SourceError(f"{path}: unknown encoding {encoding!r}. Fix: set data.options.encoding to e.g. utf-8 or cp1252.") from None
    return _NulSafeText(open_binary(path), encoding, errors)


def resolved_encoding(path: Path, encoding: str) -> str:
    """The encoding to read `path` with ("auto" resolved once per file)."""
    return detect_encoding(path) if encoding == AUTO_ENCODING else encoding


def undecodable_line(path: Path, encoding: str) -> int | None:
    """The 1-based number of the first line that does not decode (to point a user at it)."""
    if encoding == AUTO_ENCODING:
        return None
    try:
        with open_binary(path) as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    line.decode(encoding)
                except UnicodeDecodeError:
                    return number
    except STREAM_ERRORS:
        return None
    return None


def _decode_error(path: Path, encoding: str, option: str = "data.options.encoding") -> SourceError:
    with open_binary(path) as handle:
        start = handle.read(4)
    for bom, name in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if start.startswith(bom) and not encoding.lower().replace("_", "-").startswith(name):
            return SourceError(f"{path}: the file is {name.upper()} text (it starts with a {name.upper()} byte-order mark). "
                               f"Fix: set {option} in params.yaml to {name}, or save the file as UTF-8.")
    line = undecodable_line(path, encoding)
    where = f"line {line}" if line else "somewhere"
    return SourceError(
        f"{path}: {where} is not valid {encoding} text. Fix: set {option} in params.yaml to the file's "
        f"encoding (e.g. cp1252 or latin-1 for Windows/Excel exports, or 'auto' to detect it)."
    )


def delimiter_hint(header: Sequence[Any]) -> str:
    """' The header looks separated by ";"...' when one column name holds a likely separator, else ''."""
    if len(header) != 1:
        return ""
    for sep, name in ((";", "';'"), ("\t", "tabs"), ("|", "'|'")):
        if sep in str(header[0]):
            return f" The header looks separated by {name}, not commas: set the separator (data.options.csv.sep for generic)."
    return ""


def read_header(path: Path, *, encoding: str = DEFAULT_ENCODING, header_row: int | None = 0, **read_kwargs: Any) -> list[str]:
    """The column names of a CSV, read without the data; duplicate names are an error (which one is meant?)."""
    skiprows = read_kwargs.pop("skiprows", 0) or 0
    try:
        with open_text(path, encoding=encoding) as handle:
            columns = pd.read_csv(handle, nrows=0, skiprows=skiprows, **read_kwargs).columns
        raw = None
        if header_row is not None and read_kwargs.get("names") is None:
            kwargs = {k: v for k, v in read_kwargs.items() if k != "header"}
            with open_text(path, encoding=encoding) as handle:
                raw = pd.read_csv(handle, header=None, nrows=1, skiprows=skiprows + header_row, dtype=str, keep_default_na=False, **kwargs)
    except pd.errors.EmptyDataError:
        raise SourceError(f"{path}: the file is empty (no header line). Fix: point data.path at the real export.") from None
    except UnicodeDecodeError:
        raise _decode_error(path, encoding) from None
    except (ValueError, *STREAM_ERRORS) as exc:
        raise SourceError(f"{path}: cannot read the header ({exc}). Fix: check the file and data.options.") from None
    if raw is not None and len(raw):
        labels = [str(v) for v in raw.iloc[0].tolist()]
        duplicated = sorted({label for label in labels if labels.count(label) > 1})
        if duplicated:
            raise SourceError(
                f"{path}: the header names column(s) {', '.join(map(repr, duplicated))} more than once; which one holds "
                f"the data is ambiguous. Fix: rename or remove the duplicate column in the file."
            )
    return [str(c) for c in columns]


def first_line_fields(path: Path, *, encoding: str = DEFAULT_ENCODING, whitespace: bool = False) -> list[str]:
    """The fields of the first non-empty line of the (decompressed) text, to tell a header from a data row."""
    try:
        with open_text(path, encoding=encoding, errors="replace") as handle:
            for line in handle:
                if line.strip():
                    if whitespace:
                        return line.split()
                    return next(csv.reader([line]))
    except STREAM_ERRORS as exc:
        raise SourceError(f"{path}: cannot read the file ({exc}). Fix: check the path, its permissions and the file.") from None
    raise SourceError(f"{path}: the file is empty. Fix: point data.path at the real export.")


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def matches_header(fields: Sequence[str], names: Sequence[Iterable[str]]) -> bool:
    """Whether `fields` are the column names of the format: each field is one of the accepted names of
    its position (compared without case, spaces or punctuation)."""
    if len(fields) != len(names):
        return False
    return all(_normalise(field) in {_normalise(n) for n in accepted} for field, accepted in zip(fields, names, strict=True))


def headerless_layout(
    files: list[Path],
    options: Mapping,
    *,
    kind: str,
    columns: list[str],
    original: str,
    header_names: Sequence[Iterable[str]],
    whitespace: bool = False,
) -> dict[Path, int]:
    """Header lines to skip per file of a format with fixed columns and an optional header line.

    options["header"] None detects it: the first line is a header only when it names the format's columns
    (`header_names`: accepted names per position); any other first line is data, so a mangled first row is
    rejected with a reason, never taken for a header and lost. A data first line with the wrong field count
    fails, naming the file, the expected columns and the fix.
    """
    encoding = options.get("encoding", DEFAULT_ENCODING)
    header_lines = {}
    for file in files:
        fields = first_line_fields(file, encoding=encoding if encoding != AUTO_ENCODING else DEFAULT_ENCODING, whitespace=whitespace)
        has_header = options.get("header")
        if has_header is None:
            has_header = matches_header(fields, header_names)
        if not has_header and len(fields) != len(columns):
            layout = f"{len(columns)} whitespace-separated fields ({' '.join(columns)})" if whitespace else f"{len(columns)} fields per line ({','.join(columns)})"
            hint = "" if whitespace else delimiter_hint([",".join(fields)] if len(fields) == 1 else fields)
            raise SourceError(
                f"{file}: expected {layout} for data.source={kind}, the first line has {len(fields)}.{hint} "
                f"Fix: use the original {original} or data.source=generic."
            )
        header_lines[file] = int(bool(has_header))
    return header_lines


def require_columns(path: Path, header: list[str], required: Mapping[str, str], *, kind: str) -> None:
    """Fail naming the file, the first missing column and the fix. `required` maps column -> why."""
    for column, role in required.items():
        if column not in header:
            raise SourceError(
                f"{path}: missing column {column!r} ({role}) for data.source={kind}; found "
                f"{', '.join(header) or 'no columns'}.{delimiter_hint(header)} Fix: use the original {kind} export, whose header "
                f"has {', '.join(required)}, or data.source=generic with data.options.columns."
            )


_EOF_IN_QUOTE = re.compile(r"EOF inside string starting at row (\d+)")
_LINE_IN_MESSAGE = re.compile(r"in line (\d+)")


def _parser_error_line(message: str, fallback: int) -> int:
    """The 1-based file line a pandas C-parser error is about (its rows count from 0, skipped lines included)."""
    if match := _EOF_IN_QUOTE.search(message):
        return int(match.group(1)) + 1
    if match := _LINE_IN_MESSAGE.search(message):
        return int(match.group(1))
    return fallback


def iter_csv_chunks(
    path: Path,
    *,
    columns: list[str],
    header_lines: int,
    chunksize: int,
    usecols: list[str] | None = None,
    encoding: str = DEFAULT_ENCODING,
    encoding_errors: str = "strict",
    **read_kwargs: Any,
) -> Iterator[pd.DataFrame]:
    """Yield chunks of raw string fields (<NA> for empty ones) plus `raw_line`.

    `columns` names every field of a line; the first `header_lines` lines are skipped. Every
    line is a row, blank ones included (all-NA), so `raw_line` is the physical line number
    (a quoted field spanning lines would shift it). The file may be compressed (see `open_binary`);
    NUL bytes are read as NUL_SENTINEL, never cut a field.
    """
    encoding = resolved_encoding(path, encoding)
    if _arrow_can_read(path, columns=columns, header_lines=header_lines, encoding=encoding, encoding_errors=encoding_errors, read_kwargs=read_kwargs):
        rows_read = 0
        for chunk in _iter_arrow_csv_chunks(path, columns=columns, header_lines=header_lines, chunksize=chunksize, usecols=usecols,
                                            sep=read_kwargs.get("sep", read_kwargs.get("delimiter", ",")), quotechar=read_kwargs.get("quotechar", '"')):
            if chunk is None:  # Arrow met something irregular: pandas reads on from the first row not yet read
                header_lines += rows_read
                break
            rows_read += len(chunk)
            yield chunk
        else:
            return
    yield from _iter_pandas_csv_chunks(path, columns=columns, header_lines=header_lines, chunksize=chunksize, usecols=usecols,
                                       encoding=encoding, encoding_errors=encoding_errors, **read_kwargs)


# read_csv arguments Arrow's reader follows exactly; with any other, the file is read by pandas.
_ARROW_KWARGS = ("sep", "delimiter", "quotechar")
# Bytes that make Arrow's and pandas' row counts or values part ways (NUL, line breaks inside quotes):
# seen in a batch, that batch and the rest of the file are read by pandas.
_ARROW_IRREGULAR = (0, ord("\n"), ord("\r"))
_ARROW_BLOCK = 16 << 20


def _arrow_can_read(path: Path, *, columns: list[str], header_lines: int, encoding: str, encoding_errors: str, read_kwargs: dict) -> bool:
    """Whether Arrow's CSV reader reads this file as pandas would: UTF-8, at most one header line, plain
    one-character separator and quote, no byte-order mark where UTF-8 (not utf-8-sig) would keep it."""
    if set(read_kwargs) - set(_ARROW_KWARGS) or encoding_errors != "strict" or header_lines > 1:
        return False
    if any(not isinstance(v, str) or len(v) != 1 or v in "\r\n\0" for v in read_kwargs.values()):
        return False
    if not all(isinstance(c, str) for c in columns) or len(set(columns)) != len(columns):
        return False
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        return False
    if name not in ("utf-8", "utf-8-sig"):
        return False
    try:
        with open_binary(path) as handle:
            start = handle.read(3)
    except (SourceError, *STREAM_ERRORS):
        return False
    return start.startswith(codecs.BOM_UTF8) == (name == "utf-8-sig") or not start.startswith(codecs.BOM_UTF8)


def _iter_arrow_csv_chunks(
    path: Path, *, columns: list[str], header_lines: int, chunksize: int, usecols: list[str] | None, sep: str, quotechar: str
) -> Iterator[pd.DataFrame | None]:
    """Chunks as `_iter_pandas_csv_chunks` gives them, parsed by Arrow's multi-threaded reader (~10x faster,
    text straight into Arrow strings). A row with another number of fields, text that is not UTF-8, a NUL
    byte or a line break inside a field ends it: it then yields None (nothing of that batch was yielded)
    and the caller reads on with pandas, whose messages and line numbers are the contract."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = list(columns)
    wanted = names if usecols is None else list(usecols)
    reader = None
    # Arrow reads a plain file itself (not through a Python file object: the GIL on every block read)
    handle = pa.OSFile(str(path), "rb") if _compression(path) is None else open_binary(path)
    try:
        try:
            reader = pacsv.open_csv(
                handle,
                read_options=pacsv.ReadOptions(column_names=names, skip_rows=header_lines, block_size=_ARROW_BLOCK, encoding="utf8"),
                parse_options=pacsv.ParseOptions(delimiter=sep, quote_char=quotechar, ignore_empty_lines=False),
                convert_options=pacsv.ConvertOptions(
                    column_types={n: pa.large_string() for n in names}, include_columns=wanted,  # large: what pandas keeps
                    strings_can_be_null=True, null_values=[""], quoted_strings_can_be_null=True,
                ),
            )
        except (pa.ArrowException, *STREAM_ERRORS):
            yield None
            return
        next_line = header_lines + 1
        pending: list = []
        pending_rows = 0
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except (pa.ArrowException, *STREAM_ERRORS):
                batch = None
            if batch is not None and _has_irregular_bytes(batch):
                batch = None
            if batch is None:
                for chunk in _arrow_chunks(pending, pending_rows, wanted, next_line, chunksize, final=True):
                    next_line += len(chunk)
                    yield chunk
                yield None
                return
            pending.append(batch)
            pending_rows += batch.num_rows
            while pending_rows >= chunksize:
                table = pa.Table.from_batches(pending)
                chunk = _arrow_frame(table.slice(0, chunksize), wanted, next_line)
                rest = table.slice(chunksize)
                pending, pending_rows = rest.to_batches(), rest.num_rows
                next_line += len(chunk)
                yield chunk
        for chunk in _arrow_chunks(pending, pending_rows, wanted, next_line, chunksize, final=True):
            next_line += len(chunk)
            yield chunk
        if next_line == header_lines + 1:  # a header and no data: one empty chunk, as pandas gives
            yield _arrow_frame(pa.table({name: pa.array([], pa.large_string()) for name in wanted}), wanted, next_line)
    finally:
        if reader is not None:
            reader.close()
        handle.close()


def _has_irregular_bytes(batch) -> bool:
    """Whether any text of the batch holds a NUL or a line break. Looks at the columns' byte buffers whole
    (a buffer may hold bytes beyond the batch's values: a false alarm only sends the rest to pandas)."""
    for column in batch.columns:
        data = column.buffers()[2]
        if data is None:
            continue
        values = np.frombuffer(data, dtype=np.uint8)
        if values.size and values.min() <= max(_ARROW_IRREGULAR) and any((values == byte).any() for byte in _ARROW_IRREGULAR):
            return True
    return False


def _arrow_chunks(batches: list, rows: int, wanted: list[str], next_line: int, chunksize: int, *, final: bool) -> Iterator[pd.DataFrame]:
    import pyarrow as pa

    if not rows:
        return
    table = pa.Table.from_batches(batches)
    for start in range(0, rows, chunksize):
        chunk = _arrow_frame(table.slice(start, chunksize), wanted, next_line + start)
        yield chunk


def _arrow_frame(table, wanted: list[str], first_line: int) -> pd.DataFrame:
    """Arrow string columns -> a frame of TEXT columns (no copy through Python objects) plus raw_line."""
    frame = pd.DataFrame({name: pd.Series(pd.arrays.ArrowStringArray(table.column(name)), dtype=TEXT) for name in wanted})
    frame[RAW_LINE] = np.arange(first_line, first_line + table.num_rows, dtype="int64")
    return frame


def _iter_pandas_csv_chunks(
    path: Path,
    *,
    columns: list[str],
    header_lines: int,
    chunksize: int,
    usecols: list[str] | None = None,
    encoding: str = DEFAULT_ENCODING,
    encoding_errors: str = "strict",
    **read_kwargs: Any,
) -> Iterator[pd.DataFrame]:
    names = [*columns, _OVERFLOW]
    next_line = header_lines + 1
    try:
        with open_text(path, encoding=encoding, errors=encoding_errors) as handle:
            reader = pd.read_csv(
                handle,
                header=None,
                names=names,
                skiprows=header_lines,
                dtype=TEXT,
                keep_default_na=False,
                na_values=[""],
                skip_blank_lines=False,
                chunksize=chunksize,
                **read_kwargs,
            )
            with reader:
                for chunk in reader:
                    chunk = chunk.reset_index(drop=True)
                    lines = pd.RangeIndex(next_line, next_line + len(chunk))
                    overflow = chunk[_OVERFLOW].notna().to_numpy()
                    if overflow.any():
                        bad_line = int(lines[overflow.argmax()])
                        raise SourceError(
                            f"{path}: line {bad_line} has more fields than the {len(columns)} columns "
                            f"({', '.join(columns)}). Fix: quote or remove the extra field on that line."
                        )
                    # Columns are selected here: pandas' usecols cannot be combined with the overflow column.
                    chunk = chunk.drop(columns=_OVERFLOW) if usecols is None else chunk[list(usecols)]
                    chunk[RAW_LINE] = lines.to_numpy(dtype="int64")
                    next_line += len(chunk)
                    yield chunk
    except SourceError:
        raise
    except pd.errors.EmptyDataError:
        return
    except UnicodeDecodeError:
        raise _decode_error(path, encoding) from None
    except pd.errors.ParserError as exc:
        message = str(exc).strip()
        line = _parser_error_line(message, next_line)
        fix = "close the quote on that line (or set data.options.csv.quotechar / quoting for generic)" if "EOF inside string" in message else "repair that line"
        raise SourceError(f"{path}: unreadable at line {line} ({message}). Fix: {fix}.") from None
    except STREAM_ERRORS as exc:
        raise SourceError(
            f"{path}: the file is damaged or truncated{f' after line {next_line - 1}' if next_line > header_lines + 1 else ''} ({exc}). "
            f"Fix: re-download or re-compress the file."
        ) from None
    except ValueError as exc:
        raise SourceError(
            f"{path}: unreadable near line {next_line} ({exc}). Fix: repair the file or correct data.options in params.yaml."
        ) from None
