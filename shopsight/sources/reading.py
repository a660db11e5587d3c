"""Locating source files and streaming CSVs in chunks with the line number of every row."""

from __future__ import annotations

import csv
import glob
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from shopsight.sources import SourceError

RAW_LINE = "raw_line"
# An extra trailing column catches lines with more fields than the header: pandas' chunked
# parser would otherwise truncate them without a word.
_OVERFLOW = "__overflow__"
DEFAULT_ENCODING = "utf-8-sig"  # Excel exports start with a byte-order mark


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
        if not file.is_file():
            raise SourceError(f"{file}: {kind} file not found. Fix: download it there or correct {option} in params.yaml.")
    return files


def read_header(path: Path, *, encoding: str = DEFAULT_ENCODING, **read_kwargs: Any) -> list[str]:
    """The column names of a CSV, read without the data."""
    try:
        columns = pd.read_csv(path, nrows=0, encoding=encoding, **read_kwargs).columns
    except pd.errors.EmptyDataError:
        raise SourceError(f"{path}: the file is empty. Fix: point data.path at the real export.") from None
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: cannot read the header ({exc}). Fix: check the file and data.options.") from None
    return [str(c) for c in columns]


def first_line_fields(path: Path, *, encoding: str = DEFAULT_ENCODING, whitespace: bool = False) -> list[str]:
    """The fields of the first non-empty line (to tell a header from a data row)."""
    try:
        with open(path, encoding=encoding, errors="replace", newline="") as handle:
            for line in handle:
                if line.strip():
                    if whitespace:
                        return line.split()
                    return next(csv.reader([line]))
    except OSError as exc:
        raise SourceError(f"{path}: cannot open the file ({exc}). Fix: check the path and its permissions.") from None
    raise SourceError(f"{path}: the file is empty. Fix: point data.path at the real export.")


def looks_like_header(fields: list[str]) -> bool:
    """A first line none of whose fields is a number is a header line."""
    for field in fields:
        try:
            float(field.strip().strip('"'))
        except ValueError:
            continue
        return False
    return True


def headerless_layout(
    files: list[Path], options: Mapping, *, kind: str, columns: list[str], original: str, whitespace: bool = False
) -> dict[Path, int]:
    """Header lines to skip per file of a format with fixed columns and an optional header line.

    options["header"] None detects it (looks_like_header); a data first line with the wrong field count fails,
    naming the file, the expected columns and the fix.
    """
    encoding = options.get("encoding", DEFAULT_ENCODING)
    header_lines = {}
    for file in files:
        fields = first_line_fields(file, encoding=encoding, whitespace=whitespace)
        has_header = options.get("header")
        if has_header is None:
            has_header = looks_like_header(fields)
        if not has_header and len(fields) != len(columns):
            layout = f"{len(columns)} whitespace-separated fields ({' '.join(columns)})" if whitespace else f"{len(columns)} fields per line ({','.join(columns)})"
            raise SourceError(
                f"{file}: expected {layout} for data.source={kind}, the first line has {len(fields)}. "
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
                f"{', '.join(header) or 'no columns'}. Fix: use the original {kind} export, whose header "
                f"has {', '.join(required)}, or data.source=generic with data.options.columns."
            )


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
    (a quoted field spanning lines would shift it).
    """
    names = [*columns, _OVERFLOW]
    next_line = header_lines + 1
    try:
        reader = pd.read_csv(
            path,
            header=None,
            names=names,
            skiprows=header_lines,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            skip_blank_lines=False,
            chunksize=chunksize,
            encoding=encoding,
            encoding_errors=encoding_errors,
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
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise SourceError(
            f"{path}: unreadable near line {next_line} ({exc}). Fix: repair the file, or set "
            f"data.options.encoding in params.yaml if it is not UTF-8."
        ) from None
