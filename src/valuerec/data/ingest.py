"""Ingest: the one way data gets into a store, from files or DataFrames.

Every source (CSV, Parquet, JSON Lines, a pandas DataFrame or Arrow table) goes through the
same steps, all run as set-based SQL inside DuckDB so that validation costs about as much as
reading the file:

1. **read** every column as text (typed sources keep their types) with a record number;
   lines that do not even parse (wrong field count, broken JSON) are caught by the reader;
2. **map and coerce** the user's columns onto the canonical schema
   (:mod:`valuerec.data.schema`), parsing timestamps and numbers; leftover columns become the
   JSON ``properties``;
3. **validate**: a row with a missing required value or an unparseable field is quarantined
   with the field and reason, never dropped, and never stops the good rows;
4. **dedupe**: an event's identity is its ``event_id`` when given, else its content plus its
   ``occurrence`` index among identical rows of the same file, so re-ingesting a file adds
   nothing while genuine repeats inside one file are all kept;
5. **write** in batches, each one transaction holding its good rows and its quarantine rows.

Because identities are decided over the whole file before anything is written, a run killed
half way and started again writes exactly the missing rows.

Steps 1-4 always run in DuckDB (:attr:`Store.compute`). For a DuckDB store that is the store's
own connection, so step 4 anti-joins against the stored tables in place; for a PostgreSQL
store it is a private in-memory DuckDB, and the comparison with stored rows happens on the
server as each batch is written (:meth:`Store.append_staged`), with the same rules.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from valuerec.data.schema import EVENTS, Field, Kind, Table, table
from valuerec.data.store import Store, merge_properties, updated_columns

log = logging.getLogger(__name__)

FORMATS = ("csv", "parquet", "jsonl")
_EXTENSIONS = {
    ".csv": "csv", ".tsv": "csv", ".txt": "csv",
    ".parquet": "parquet", ".pq": "parquet",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
}  # fmt: skip
SEP = "chr(31)"  # unit separator between the fields of a quarantine row's hash

#: Progress callback: (step description, units done, units total).
Progress = Callable[[str, int, int], None]


class InputError(ValueError):
    """A source that cannot be ingested at all; nothing was written to the store."""


@dataclass
class IngestResult:
    """What one ingest run did: the summary ``valuerec ingest`` prints."""

    source: str
    kind: str
    run_id: int
    rows_read: int
    stored: int
    duplicates: int
    quarantined: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# SQL helpers
# --------------------------------------------------------------------------------------------
def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _json_key(key: str) -> str:
    """A SQL literal addressing top-level ``key`` of a JSON object, whatever its characters.

    A JSON pointer (``/key``, with ``~`` and ``/`` escaped) rather than a ``$.`` path, whose
    quoting breaks on keys holding ``"`` and which reads ``$``-keys as paths.
    """
    return _lit("/" + key.replace("~", "~0").replace("/", "~1"))


_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
            "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL")  # fmt: skip


def _is_numeric(sql_type: str) -> bool:
    return sql_type.upper().startswith(_NUMERIC)


def _is_temporal(sql_type: str) -> bool:
    return sql_type.upper().startswith(("TIMESTAMP", "DATE"))


# What trimming removes: DuckDB's trim() takes only the Unicode spaces (space, NBSP, em
# space...), so a tab or a line break around an id ("\tu1", a quoted "u1\n") made another
# user. These are the spaces it takes plus the ASCII control whitespace.
_WHITESPACE = (
    " \t\n\r\x0b\x0c\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))  # en quad .. hair space
    + "\u202f\u205f\u3000"
)


def _trim(sql: str) -> str:
    # trim() given characters is ten times slower than plain trim(): a value that starts and
    # ends with a visible ASCII character (nearly every one) skips it
    return (
        f"CASE WHEN ascii({sql}) BETWEEN 33 AND 126 AND ascii(({sql})[-1:]) BETWEEN 33 AND 126 "
        f"THEN {sql} ELSE trim({sql}, {_lit(_WHITESPACE)}) END"
    )


def _text(col: str) -> str:
    return f"nullif({_trim(f'CAST({col} AS VARCHAR)')}, '')"


def _source_text(col: str, src_type: str) -> str:
    """A source column as trimmed text, NULL when empty.

    A JSON value (a JSON Lines key) gives its scalar text (``abc``, not ``"abc"``; an object
    gives its JSON text), so a field reads the same from JSON Lines as from a CSV.
    """
    if src_type.upper() == "JSON":
        return _text(f"({col} ->> '$')")
    return _text(col)


def _number_text(col: str, src_type: str) -> str:
    """A typed number column as text, an integral float as its integer (``1``, not ``1.0``).

    pandas holds an integer column with a missing value as float, and Parquet keeps that
    type: ``1.0`` must be the id ``"1"`` and ``19970101.0`` the date 1997-01-01 (not epoch
    seconds), as the same column read from a CSV gives.
    """
    if not src_type.upper().startswith(("FLOAT", "DOUBLE", "DECIMAL")):
        return f"CAST({col} AS VARCHAR)"
    return (
        f"CASE WHEN {col} = trunc({col}) AND abs({col}) < 9007199254740992 "
        f"THEN CAST(CAST({col} AS BIGINT) AS VARCHAR) ELSE CAST({col} AS VARCHAR) END"
    )


# Plain ISO text (date, optional time, no zone): the fast TIMESTAMP cast reads it exactly.
_DATE_RE = r"[0-9]{4}[-/][0-9]{1,2}[-/][0-9]{1,2}"
_PLAIN_RE = _DATE_RE + r"([T ][0-9]{1,2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?)?"
# A date and time followed by something else (an offset, a zone name, a word): the plain cast
# would silently drop the rest, so these go through TIMESTAMPTZ, which converts an offset or a
# zone it knows (``Z``, ``+01:00``, ``+01:30:15``, ``EST``, ``Europe/Paris``) and rejects the
# rest (``PM``, ``BC``, ``foo``).
_ZONED_RE = "^" + _DATE_RE + "[T ][0-9]"
#: digits-only timestamps (whole text): eight are a YYYYMMDD date (also with a zero
#: fraction, as a float column writes one: ``19970101.0``), up to eleven (with an optional
#: fraction) epoch seconds. The API reads posted events by the same rules.
YYYYMMDD_RE = r"[0-9]{8}(\.0*)?"
EPOCH_SECONDS_RE = r"-?[0-9]{1,11}(\.[0-9]*)?"


#: the times a store keeps: years 1 to 9999 once in UTC, those Python's ``datetime`` holds.
#: DuckDB reads wider (``0000-06-01``, ``9999-12-31T23:30-01:00``, ``-99999999999`` epoch
#: seconds), but psycopg and the API cannot load such a time, and PostgreSQL's mirror of the
#: store read 1 BC back as 1 AD; the API refuses them too.
TIMESTAMP_RANGE = "years 1 to 9999 in UTC"
_FIRST_TIME, _PAST_LAST_TIME = "TIMESTAMP '0001-01-01'", "TIMESTAMP '10000-01-01'"


def _parse_timestamp(col: str, src_type: str, *, pretrimmed: bool = False) -> str:
    """SQL that turns a column into naive-UTC TIMESTAMP, or NULL when it cannot be parsed or
    falls outside :data:`TIMESTAMP_RANGE` (so the row is quarantined).

    Accepts ISO 8601 (with or without an offset or a zone name DuckDB's TIMESTAMPTZ knows),
    ``YYYYMMDD`` and epoch seconds. Eight digits are read as a date, never as epoch seconds
    (which would be 1970-04 at most). Plain ISO text takes the much faster plain cast; any
    other text after the time goes through TIMESTAMPTZ, so a zone is converted and trailing
    words are rejected instead of being dropped.
    """
    if src_type.upper() == "TIMESTAMP_NS":
        # nanoseconds cut to microseconds, as the text cast cuts them: pandas' and Parquet's
        # ...455549999 and a CSV's ...455549999 must be one event (a CAST rounds it to 550)
        ts = f"make_timestamp(epoch_us({col}))"
    elif _is_temporal(src_type):
        ts = f"CAST({col} AS TIMESTAMP)"
    else:
        if _is_numeric(src_type):
            t = _number_text(col, src_type)
        else:
            t = f"CAST({col} AS VARCHAR)" if pretrimmed else _text(col)
        ts = (
            f"CASE WHEN regexp_full_match({t}, '{_PLAIN_RE}') THEN try_cast({t} AS TIMESTAMP) "
            f"WHEN regexp_matches({t}, '{_ZONED_RE}') "
            f"THEN CAST(try_cast({t} AS TIMESTAMPTZ) AS TIMESTAMP) "
            f"WHEN regexp_full_match({t}, '{YYYYMMDD_RE}') "
            f"THEN try_strptime(left({t}, 8), '%Y%m%d') "
            f"WHEN regexp_full_match({t}, '{EPOCH_SECONDS_RE}') "
            f"THEN CAST(to_timestamp(CAST({t} AS DOUBLE)) AS TIMESTAMP) END"
        )
    # DuckDB computes the repeated expression once (measured: as fast on 1M texts)
    return f"CASE WHEN ({ts}) >= {_FIRST_TIME} AND ({ts}) < {_PAST_LAST_TIME} THEN ({ts}) END"


_TEXT_PARSER: duckdb.DuckDBPyConnection | None = None
_TEXT_PARSER_LOCK = threading.Lock()


def parse_timestamp_texts(values: Any) -> pd.Series:
    """Text timestamps read by ingest's own rule, as naive UTC ``datetime64[us]``; NaT where
    ingest would quarantine the row (and for missing values). The vectorised form of
    :func:`parse_timestamp_text`, for DataFrames handed to models and splits.

    Microseconds, as the store keeps them: they hold every time ingest keeps (years 1 to
    9999), where nanoseconds hold 1677-09-21 to 2262-04-11 only and a cast to them wrapped
    9999-12-31 round into 1816. A caller that needs nanoseconds must check the range first
    (``evaluate.ranking.to_datetimes`` refuses such a time by name)."""
    frame = pd.DataFrame(
        {
            "t": pd.Series(values, dtype=object).map(
                lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
            )
        }
    )
    sql = f"SELECT {_parse_timestamp('t', 'VARCHAR')} AS ts FROM _vr_texts"
    with _TEXT_PARSER_LOCK:
        con = _text_parser()
        con.register("_vr_texts", frame)
        try:
            out = con.execute(sql).df()["ts"]
        finally:
            con.unregister("_vr_texts")
    return pd.Series(out.to_numpy("datetime64[us]"), index=pd.Series(values).index)


def _text_parser() -> duckdb.DuckDBPyConnection:
    """The in-process DuckDB the text parsers share (hold ``_TEXT_PARSER_LOCK``)."""
    global _TEXT_PARSER
    if _TEXT_PARSER is None:
        _TEXT_PARSER = duckdb.connect(":memory:")
        _TEXT_PARSER.execute("SET TimeZone = 'UTC'")
    return _TEXT_PARSER


def parse_timestamp_text(text: str) -> datetime | None:
    """One text timestamp read by ingest's own rule (:func:`_parse_timestamp`'s SQL, run on
    it), as naive UTC; None when ingest would quarantine it.

    The API reads posted times with this, so an event gets the same time however it arrives:
    a zone name (``Europe/Paris``), a seconds offset or ``2024-1-1`` are read as a file's are,
    and text ingest refuses (``2024-01-01t10:00``) is refused there too. One in-process
    DuckDB connection, behind a lock (a connection serves one thread at a time).
    """
    sql = f"SELECT {_parse_timestamp('t', 'VARCHAR')} FROM (SELECT CAST(? AS VARCHAR) AS t)"
    with _TEXT_PARSER_LOCK:
        # fetchall, not fetchone: a result left unfinished on the shared connection made the
        # next parse_timestamp_texts (its register()) fail with ResourceInUseException
        (row,) = _text_parser().execute(sql, [text]).fetchall()
    # a time out of Python's range would come back as text; the SQL gives NULL for those now
    return row[0] if isinstance(row[0], datetime) else None


def _coerce(f: Field, col: str, src_type: str, *, pretrimmed: bool = False) -> str:
    """SQL that coerces source column ``col`` to field ``f`` (NULL where it cannot).

    ``pretrimmed``: ``col`` already went through :func:`_text` (or is a typed column).
    """
    t = col if pretrimmed else _text(col)
    if f.kind is Kind.ID and _is_numeric(src_type):
        return _number_text(t, src_type)
    if f.kind in (Kind.ID, Kind.STRING):
        return f"CAST({t} AS VARCHAR)"
    if f.kind is Kind.LABEL:
        return f"lower(CAST({t} AS VARCHAR))"
    if f.kind is Kind.FLOAT:
        x = f"CAST({col} AS DOUBLE)" if _is_numeric(src_type) else f"try_cast({t} AS DOUBLE)"
        return f"CASE WHEN isfinite({x}) THEN {x} END"
    if f.kind is Kind.TIMESTAMP:
        return _parse_timestamp(t, src_type, pretrimmed=True)
    raise AssertionError(f.kind)


_EXPECT = {
    Kind.FLOAT: "a finite number",
    Kind.TIMESTAMP: f"a timestamp (ISO 8601, YYYYMMDD or epoch seconds) within {TIMESTAMP_RANGE}",
    Kind.JSON: "a JSON object",
}


# --------------------------------------------------------------------------------------------
# Sources: a SELECT yielding ROW (record number), LINE (text line, if known) and the columns
# --------------------------------------------------------------------------------------------
# The columns ingest adds beside the source's own. Prefixed so that no input column collides
# with them: a file's own "_row" or "_line" column is data like any other.
ROW, LINE = "__vr_row", "__vr_line"
#: JSON Lines: why a line is no record (NULL when it is one), and its text
MALFORMED, RAWTEXT = "__vr_malformed", "__vr_rawtext"
_INTERNAL = frozenset({ROW, LINE, MALFORMED, RAWTEXT})
#: the column of the JSON Lines key "" (a column cannot be named ""); properties call it ""
_EMPTY_KEY = "__vr_empty_key"


@dataclass
class _Source:
    """A source loaded into temp table ``_vr_src``."""

    sql: str  # a SELECT over it: ROW, LINE and the source's columns
    fmt: str
    #: the file, for a second look when it has bad rows (exact CSV lines); None: a DataFrame
    path: Path | None = None
    #: JSON Lines: column -> every key it holds (spellings differing only in case; the first
    #: is its name in ``properties``). Other sources: a column is its own key.
    keys: dict[str, list[str]] = field(default_factory=dict)
    #: CSV: the dialect it was read with, which the line scan (:func:`_csv_layout`) follows
    dialect: _Dialect | None = None

    def key(self, col: str) -> str:
        """The name of column ``col`` in ``properties`` and in a quarantined row's ``raw``."""
        return self.keys.get(col, [col])[0]


def detect_format(path: Path, fmt: str | None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise InputError(
                f"{path}: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}"
            )
        return fmt
    if path.suffix.lower() in _COMPRESSED_SUFFIXES:
        raise InputError(f"{path}: {_NOT_COMPRESSED}")
    try:
        return _EXTENSIONS[path.suffix.lower()]
    except KeyError:
        raise InputError(
            f"{path}: cannot tell the format from the extension {path.suffix!r}; "
            f"pass --format ({', '.join(FORMATS)})"
        ) from None


# Compressed input is refused, not read: DuckDB's read_csv would decompress a .gz, but the
# second look that gives quarantined rows their text lines (_csv_layout) and the JSON Lines
# readers work on the file's bytes, so every line number would be wrong.
_NOT_COMPRESSED = "compressed files are not supported: decompress it first"
_COMPRESSED_SUFFIXES = frozenset({".gz", ".gzip", ".zst", ".bz2", ".xz", ".zip"})
_COMPRESSED_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"PK\x03\x04", "a zip archive (an Excel workbook is one too)"),
)
# Longest first: a UTF-32 little-endian mark starts with the UTF-16 one.
_UTF_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32 (little-endian)"),
    (b"\x00\x00\xfe\xff", "UTF-32 (big-endian)"),
    (b"\xff\xfe", "UTF-16 (little-endian)"),
    (b"\xfe\xff", "UTF-16 (big-endian)"),
)


def _check_bytes(path: Path, fmt: str | None) -> None:
    """Refuse a compressed file, and a text file that is UTF-16 or UTF-32, by their first bytes.

    Without this a gzip file read with ``--format csv`` is ingested with wrong quarantine
    lines, and UTF-16 text (Excel's "Unicode Text", PowerShell 5's ``Export-Csv``) fails as
    "missing required columns" listing byte-mangled names. Both are one clear error instead.
    """
    with open(path, "rb") as fh:
        head = fh.read(4096)
    for magic, what in _COMPRESSED_MAGIC:
        if head.startswith(magic):
            kind = what if " " in what else f"{what}-compressed"
            raise InputError(f"{path}: the file is {kind}; {_NOT_COMPRESSED}")
    if head.startswith(b"BZh") and head[3:4].isdigit():
        raise InputError(f"{path}: the file is bzip2-compressed; {_NOT_COMPRESSED}")
    if fmt == "parquet" or (fmt is None and _EXTENSIONS.get(path.suffix.lower()) == "parquet"):
        return
    encoding = next((name for bom, name in _UTF_BOMS if head.startswith(bom)), None)
    if encoding is None and len(head) >= 8:
        # no byte order mark: UTF-16 text of mostly ASCII has a NUL in every other byte
        even, odd = (np.frombuffer(head[i : len(head) // 2 * 2 : 2], np.uint8) for i in (0, 1))
        if (odd == 0).mean() > 0.9 and (even == 0).mean() < 0.1:
            encoding = "UTF-16 (little-endian)"
        elif (even == 0).mean() > 0.9 and (odd == 0).mean() < 0.1:
            encoding = "UTF-16 (big-endian)"
    if encoding is not None:
        raise InputError(
            f"{path}: the file is {encoding} text, not UTF-8: save it as UTF-8 "
            "(Excel: CSV UTF-8; PowerShell: Export-Csv -Encoding utf8)"
        )


def _source_sql(con: duckdb.DuckDBPyConnection, source: Any, fmt: str | None) -> _Source:
    """Load ``source`` into temp table ``_vr_src``; returns a numbered SELECT over it.

    The source is copied as is (in parallel, insertion order preserved) so that the record
    number is the table's ``rowid``: numbering with a window function while reading would
    force the whole validation pipeline onto one thread.
    """
    con.execute("DROP TABLE IF EXISTS _vr_src")
    if not isinstance(source, str | Path):
        con.register("_vr_frame", _as_frame(source))
        con.execute("CREATE TEMP TABLE _vr_src AS SELECT * FROM _vr_frame")
        return _Source(_numbered(con), "table")
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty")
    _check_bytes(path, fmt)
    fmt = detect_format(path, fmt)
    with _exact_path(path) as exact:
        p = _lit(exact)
        if fmt == "csv":
            dialect = _sniff_csv(con, p, path)
            columns = ", ".join(f"{_lit(name)}: 'VARCHAR'" for name in dialect.names)
            con.execute("DROP TABLE IF EXISTS _vr_rejects; DROP TABLE IF EXISTS _vr_scans")
            con.execute(
                f"CREATE TEMP TABLE _vr_src AS SELECT * FROM read_csv({p}, {_CSV_OPTIONS}, "
                f"auto_detect = false, delim = {_lit(dialect.delim)}, "
                f"quote = {_lit(dialect.quote)}, escape = {_lit(dialect.escape)}, "
                f"columns = {{{columns}}}, "
                "store_rejects = true, rejects_table = '_vr_rejects', rejects_scan = '_vr_scans')"
            )
            return _Source(_numbered(con), fmt, path.resolve(), dialect=dialect)
        elif fmt == "parquet":
            con.execute(f"CREATE TEMP TABLE _vr_src AS SELECT * FROM read_parquet({p})")
        else:
            keys = _read_jsonl(con, p, Path(exact))
            return _Source("SELECT * FROM _vr_src", fmt, path.resolve(), keys)
    return _Source(_numbered(con), fmt, path.resolve())


_INPUT_ROWID = "__vr_input_rowid"


def _numbered(con: duckdb.DuckDBPyConnection) -> str:
    """``_vr_src`` with its record number (``rowid + 1``) and an empty text line.

    An input column named ``rowid`` (any case) would hide DuckDB's row-number pseudo-column:
    it is renamed in the table and given its name back in the SELECT, so it stays data.
    """
    cols = [r[0] for r in con.execute("SELECT name FROM pragma_table_info('_vr_src')").fetchall()]
    shadow = next((c for c in cols if c.lower() == "rowid"), None)
    rest = "*"
    if shadow is not None:
        con.execute(f"ALTER TABLE _vr_src RENAME COLUMN {_ident(shadow)} TO {_INPUT_ROWID}")
        rest = f"* RENAME ({_INPUT_ROWID} AS {_ident(shadow)})"
    return f"SELECT rowid + 1 AS {ROW}, CAST(NULL AS BIGINT) AS {LINE}, {rest} FROM _vr_src"


_GLOB = frozenset("*?[]{}")
#: the longest CSV record read (DuckDB's default is 2 MB: a longer field in the sniffer's
#: sample refused the whole file). DuckDB's read buffer grows with it unless given, and a
#: larger buffer reads slower (64 MB: the 5-million-row benchmark read takes twice as long),
#: so the buffer stays at its default, 32 MB, which must exceed the longest record.
_MAX_LINE = 16 << 20
# No comment character and no skipped lines, whatever the sniffer guesses: a first line
# starting with '#' would otherwise turn '#' into a comment marker, silently dropping the
# records that start with it and cutting values at it. The first line is the header.
_CSV_OPTIONS = (
    "header = true, comment = '', skip = 0, all_varchar = true, "
    f"max_line_size = {_MAX_LINE}, buffer_size = {2 * _MAX_LINE}"
)


@dataclass(frozen=True)
class _Dialect:
    """How a CSV file is read: what DuckDB's sniffer found, with RFC 4180 quoting."""

    delim: str
    quote: str
    escape: str
    newline: str  # as the sniffer names it: "\\n", "\\r\\n" or "\\r"
    names: tuple[str, ...]  # the header's column names


def _sniff_csv(con: duckdb.DuckDBPyConnection, p: str, path: Path) -> _Dialect:
    """The dialect to read a CSV with: the sniffed delimiter, and ``"`` quoting unless the
    file uses another quote character.

    One unescaped quote in the sniffer's sample (``"27" monitor"``) makes it settle on *no*
    quote character for the whole file: every quoted value would keep its quotes (ids
    ``"u1"``, event type ``"purchase"``), silently. Told the quote instead, it refuses the
    file. So the file is read with the dialect given and auto-detection off: a found quote
    and escape are kept (``\\`` escapes included); when none was found but the file's first
    megabyte has a value in double quotes, it is RFC 4180's ``"`` (doubled to escape it), and
    the bad line is rejected on its own. A file that quotes nothing stays without a quote
    character, so that one stray ``"oops`` there is data, not a field running to the end of
    the file.
    """
    try:
        (delim, quote, escape, newline, columns) = con.execute(
            "SELECT Delimiter, Quote, Escape, NewLineDelimiter, Columns FROM "
            f"sniff_csv({p}, {_CSV_OPTIONS}, ignore_errors = true)"
        ).fetchone()
    except duckdb.InvalidInputException as exc:
        if "Maximum line size" not in str(exc):
            raise
        # a record over the limit in the sniffer's sample: it is one quarantined line, as
        # further down, not a file refused
        return _plain_dialect(path)
    quote, escape = ("" if c == "(empty)" else c for c in (quote, escape))
    names = tuple(c["name"] for c in columns)
    if not quote:
        with open(path, "rb") as fh:
            head = fh.read(1 << 20).decode("utf-8-sig", errors="replace")
        if _quotes_values(head, delim):
            quote = '"'
            # the sniffer split the header without quoting: its names may hold the quotes
            names = _csv_header(path, head, delim, quote)
    return _Dialect(delim, quote, escape or quote, newline, names)


def _plain_dialect(path: Path) -> _Dialect:
    """RFC 4180 with the delimiter and line end the header uses, for when the sniffer fails."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 20).decode("utf-8-sig", errors="replace")
    first = head.splitlines()[0] if head else ""
    delim = max(",;\t|", key=first.count)
    end = head[len(first) : len(first) + 2]
    newline = "\\r\\n" if end == "\r\n" else "\\r" if end[:1] == "\r" else "\\n"
    return _Dialect(delim, '"', '"', newline, _csv_header(path, head, delim, '"'))


def _quotes_values(head: str, delim: str) -> bool:
    """Whether some value in ``head`` (a CSV's first lines) is wrapped in double quotes."""
    return any(
        len(value) >= 2 and value[0] == value[-1] == '"'
        for line in head.splitlines()
        for value in line.split(delim)
    )


def _csv_header(path: Path, head: str, delim: str, quote: str) -> tuple[str, ...]:
    """The column names of the first record of ``head`` (the start of the CSV at ``path``),
    read with ``quote`` (doubled to escape it).

    Named as DuckDB's sniffer names them: trimmed, an empty name ``column<i>`` (0-based),
    a repeat of an earlier name (in any case) suffixed ``_1``, ``_2``...
    """
    try:
        reader = csv.reader(io.StringIO(head, newline=""), delimiter=delim, quotechar=quote)
        header = next(reader, [])
    except (csv.Error, TypeError) as exc:  # TypeError: a delimiter longer than one character
        raise InputError(f"{path}: cannot read the CSV header: {exc}") from None
    names: list[str] = []
    seen: dict[str, int] = {}
    for i, text in enumerate(header):
        name = text.strip() or f"column{i}"
        repeat = seen.get(name.lower(), 0)
        seen[name.lower()] = repeat + 1
        names.append(f"{name}_{repeat}" if repeat else name)
    return tuple(names)


@contextlib.contextmanager
def _exact_path(path: Path) -> Iterator[str]:
    """A name under which DuckDB's readers open exactly ``path``, never a glob's matches.

    read_csv / read_parquet / read_text expand ``*``, ``?`` and ``[...]`` in a file name
    (``data[1].csv`` would read ``data1.csv``) and have no escape for them, so a name holding
    one is read through a symbolic link with a plain name, removed once the file is copied in.
    """
    resolved = path.resolve()
    if not _GLOB.intersection(str(resolved)):
        yield str(resolved)
        return
    folder = Path(tempfile.mkdtemp(prefix="valuerec-ingest-"))
    try:
        link = folder / f"source{path.suffix.lower()}"
        link.symlink_to(resolved)
        yield str(link)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


_NOT_AN_OBJECT = "malformed JSON: not a JSON object"
#: a line DuckDB's JSON reader refuses: cut short, a syntax error, or a lone UTF-16
#: surrogate escape such as ``"\\ud800"`` (which stands for no character)
_NOT_JSON = "malformed JSON: not valid JSON"
_NOT_UTF8 = "invalid UTF-8"


def _read_jsonl(con: duckdb.DuckDBPyConnection, p: str, path: Path) -> dict[str, list[str]]:
    """JSON Lines, read line by line so a malformed line is quarantined with its number.

    Returns the keys each column holds (:attr:`_Source.keys`).
    """
    con.execute("DROP TABLE IF EXISTS _vr_text")
    try:
        con.execute(
            "CREATE TEMP TABLE _vr_text AS SELECT * FROM ("
            f"SELECT row_number() OVER () AS {LINE}, rtrim(t, chr(13)) AS {RAWTEXT}, "
            f"CAST(NULL AS VARCHAR) AS {MALFORMED} "
            # a leading UTF-8 byte order mark is not part of the first record
            f"FROM (SELECT unnest(string_split(ltrim(content, chr(65279)), chr(10))) AS t "
            f"FROM read_text({p}))) "
            f"WHERE trim({RAWTEXT}) <> ''"
        )
    except duckdb.InvalidInputException as exc:
        if "UTF-8" not in str(exc):
            raise
        # read_text refuses the whole file for one bad byte: decode it line by line instead
        # (only then, so a clean file costs one read), quarantining the lines that are not
        # text rather than holding back the good ones
        _read_jsonl_bytes(con, path)
    con.execute(
        f"UPDATE _vr_text SET {MALFORMED} = CASE WHEN json_valid({RAWTEXT}) THEN "
        f"CASE WHEN json_type({RAWTEXT}) <> 'OBJECT' THEN {_lit(_NOT_AN_OBJECT)} END "
        f"ELSE {_lit(_NOT_JSON)} END WHERE {MALFORMED} IS NULL"
    )
    found = [
        k
        for (k,) in con.execute(
            f"SELECT k FROM (SELECT DISTINCT unnest(json_keys({RAWTEXT})) AS k FROM _vr_text "
            f"WHERE {MALFORMED} IS NULL) ORDER BY k"
        ).fetchall()
    ]
    # a file that opens with "[" is a JSON array (an "export as JSON"), never records one per
    # line: one clear error, not each of its lines quarantined (or, pretty-printed, the
    # lines that happen to hold a whole object stored)
    first = con.execute(f"SELECT ltrim({RAWTEXT}) FROM _vr_text ORDER BY {LINE} LIMIT 1").fetchone()
    if first is not None and str(first[0]).startswith("["):
        raise InputError(
            f"{path}: a JSON array, not JSON Lines: write one object per line "
            "(pandas: to_json(orient='records', lines=True))"
        )
    if first is not None and not found:
        raise InputError(f"{path}: not JSON Lines: no line is a JSON object")
    # DuckDB column names are case-insensitive: keys differing only in case ("Value" in some
    # lines, "value" in others) are one column, named by the first spelling; a line holding
    # both gives the non-null value, and one holding two different values is quarantined
    # (which one is meant cannot be told: taking either dropped the other silently).
    groups: dict[str, list[str]] = {}
    for k in found:
        groups.setdefault(k.lower(), []).append(k)
    for spellings in (ks for ks in groups.values() if len(ks) > 1):
        values = ", ".join(
            f"nullif({RAWTEXT}->{_json_key(k)}, CAST('null' AS JSON))" for k in spellings
        )
        named = " and ".join(repr(k) for k in spellings)
        con.execute(
            f"UPDATE _vr_text SET {MALFORMED} = "
            f"{_lit(f'keys {named} differ only in case and hold different values')} "
            f"WHERE {MALFORMED} IS NULL AND "
            f"len(list_distinct(list_filter([{values}], lambda x: x IS NOT NULL))) > 1"
        )
    # a column cannot be named "": that key gets a column of its own name
    keys = {(ks[0] or _EMPTY_KEY): ks for ks in groups.values()}
    # JSON values (->), not their text (->>): a number, boolean or object keeps its JSON type
    # in properties, as from Parquet or a DataFrame; _source_text reads a field's text
    cols = "".join(
        f", CASE WHEN {MALFORMED} IS NULL THEN "
        + (
            f"{RAWTEXT}->{_json_key(spellings[0])}"
            if len(spellings) == 1
            else "coalesce("
            + ", ".join(
                f"nullif({RAWTEXT}->{_json_key(k)}, CAST('null' AS JSON))" for k in spellings
            )
            + ")"
        )
        + f" END AS {_ident(col)}"
        for col, spellings in keys.items()
    )
    con.execute(
        f"CREATE TEMP TABLE _vr_src AS SELECT {LINE} AS {ROW}, {LINE}{cols}, "
        f"{MALFORMED}, {RAWTEXT} FROM _vr_text"
    )
    con.execute("DROP TABLE _vr_text")
    return keys


def _read_jsonl_bytes(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """``_vr_text`` from a file that is not all UTF-8: each line decoded on its own."""
    data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    lines, texts, why = [], [], []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.rstrip(b"\r")
        try:
            text, reason = raw.decode("utf-8"), None
        except UnicodeDecodeError:
            # kept readable in the quarantine, the bad bytes shown as \xNN
            text, reason = raw.decode("utf-8", "backslashreplace"), _NOT_UTF8
        if text.strip():
            lines.append(number)
            texts.append(text)
            why.append(reason)
    frame = pd.DataFrame(
        {
            LINE: np.array(lines, dtype=np.int64),
            RAWTEXT: pd.Series(texts, dtype=object),
            MALFORMED: pd.Series(why, dtype=object),
        }
    )
    con.register("_vr_lines", frame)
    try:
        con.execute(
            f"CREATE TEMP TABLE _vr_text AS SELECT {LINE}, {RAWTEXT}, "
            f"CAST({MALFORMED} AS VARCHAR) AS {MALFORMED} FROM _vr_lines ORDER BY {LINE}"
        )
    finally:
        con.unregister("_vr_lines")


# --------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------
def _resolve_columns(
    tbl: Table,
    src_cols: dict[str, str],
    mapping: Mapping[str, str],
    constants: Mapping[str, Any],
    name: str,
) -> tuple[dict[str, str], list[str]]:
    """Map canonical field -> source column; returns (that map, leftover source columns)."""
    known = {f.name for f in tbl.fields}
    user_cols = [c for c in src_cols if c not in _INTERNAL]
    unknown_targets = sorted(set(mapping.values()) - known)
    if unknown_targets:
        raise InputError(
            f"{name}: --map targets {unknown_targets} are not {tbl.name} fields "
            f"({', '.join(tbl.names)})"
        )
    missing_src = sorted(set(mapping) - set(user_cols))
    if missing_src:
        raise InputError(
            f"{name}: --map names columns {missing_src} that the file does not have; "
            f"it has {user_cols}"
        )
    unknown_consts = sorted(set(constants) - known)
    if unknown_consts:
        raise InputError(f"{name}: --set names {unknown_consts}, not {tbl.name} fields")
    by_field: dict[str, str] = {}
    for their, ours in mapping.items():
        if ours in by_field:
            raise InputError(f"{name}: two columns map to {ours!r}")
        by_field[ours] = their
    taken = set(mapping)
    for col in user_cols:
        canon = col.strip().lower()
        if col not in taken and canon in known and canon not in by_field:
            by_field[canon] = col
            taken.add(col)
    missing = [f for f in tbl.required if f not in by_field and f not in constants]
    if missing:
        raise InputError(
            f"{name}: missing required column(s) {', '.join(missing)} for {tbl.name}; "
            f"the file has {user_cols} (use --map THEIR_COLUMN=FIELD or --set FIELD=VALUE)"
        )
    extras = [c for c in user_cols if c not in taken]
    return by_field, extras


def ingest(
    store: Store,
    source: str | Path | pd.DataFrame | Any,
    kind: str = "events",
    *,
    format: str | None = None,
    mapping: Mapping[str, str] | None = None,
    constants: Mapping[str, Any] | None = None,
    source_name: str | None = None,
    batch_size: int = 2_000_000,
    progress: Progress | None = None,
) -> IngestResult:
    """Validate ``source`` and add its rows to ``store``; bad rows go to the quarantine.

    Args:
        store: where to write.
        source: a file path (CSV with a header row, Parquet, JSON Lines) or a DataFrame /
            Arrow table.
        kind: ``events``, ``items`` or ``users``.
        format: ``csv``, ``parquet`` or ``jsonl``; guessed from the extension when omitted.
        mapping: ``{their_column: canonical_field}``; columns named like a canonical field
            (case-insensitive) map by themselves.
        constants: ``{field: value}`` defaults, e.g. ``{"event_type": "purchase"}`` for a
            file of transactions; they fill the field where the file has no value.
        source_name: what the quarantine and the ingest log call the source.
        batch_size: records per transaction.
        progress: optional callback ``(step, done, total)``.

    Raises:
        InputError: the source cannot be read at all, or lacks a required column; the store
            is unchanged.
    """
    tbl = table(kind)
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    mapping = dict(mapping or {})
    constants = dict(constants or {})
    is_path = isinstance(source, str | Path)
    name = source_name or (str(source) if is_path else f"<{type(source).__name__}>")
    # the quarantine key names a file by its resolved path, so the same file reached through
    # another path (relative, absolute, a link) re-quarantines nothing
    key_name = str(Path(source).resolve()) if is_path and not source_name else name
    started = time.time()
    con = store.compute
    _check_constants(con, tbl, constants)
    report = progress or (lambda *_: None)
    report("reading", 0, 1)
    try:
        try:
            src = _source_sql(con, source, format)
            src_cols = dict(
                con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {src.sql})").fetchall()
            )
            by_field, extras = _resolve_columns(tbl, src_cols, mapping, constants, name)
            _stage(con, tbl, src, src_cols, by_field, extras, constants)
        except duckdb.Error as exc:
            raise InputError(
                f"{name}: cannot be read as {format or 'its format'}: {_reason(exc)}"
            ) from None
        report("reading", 1, 1)
        report("deduplicating", 0, 1)
        local = store.local
        # the fields this source gives a value (a column or a --set default): an upsert of an
        # item or user changes only these, keeping what an earlier file stored for the others
        supplied = frozenset(by_field) | frozenset(constants)
        new_sql = (
            _key_events(con, local) if tbl is EVENTS else _key_entities(con, tbl, supplied, local)
        )
        n_rejects = _quarantine_rows(con, tbl, src, key_name, by_field, local)
        report("deduplicating", 1, 1)
        with store.ingest_lock():
            return _write(
                store, tbl, new_sql, name, started, batch_size, n_rejects, report, supplied
            )
    finally:
        for t in ("_vr_src", "_vr_stage", "_vr_new", "_vr_bad", "_vr_rep", "_vr_skip",
                  "_vr_rejects", "_vr_scans"):  # fmt: skip
            con.execute(f"DROP TABLE IF EXISTS {t}")
        with contextlib.suppress(Exception):
            con.unregister("_vr_frame")


def _reason(exc: duckdb.Error) -> str:
    """DuckDB's message, short: its first line, and the line saying why when that is not it.

    A record over the longest line read is "CSV Error on Line: 1" (the sniffer's count, not
    the file's) with the reason further down, after the whole record.
    """
    lines = [ln.strip() for ln in str(exc).strip().splitlines()]
    why = next((ln for ln in lines[1:] if ln.startswith("Maximum line size")), None)
    if why is None:
        return lines[0]
    return f"a record is longer than the longest read: {why}"


def _check_constants(
    con: duckdb.DuckDBPyConnection, tbl: Table, constants: Mapping[str, Any]
) -> None:
    """Fail up front on a ``--set`` default that is empty or cannot be parsed.

    A bad default would otherwise quarantine every row ("missing required value") or store
    NULL in every row without a word.
    """
    for field_name, value in constants.items():
        if field_name not in tbl.names:
            continue  # _resolve_columns names every unknown field at once
        f = tbl.field(field_name)
        text = str(value).strip()
        if f.kind is Kind.JSON:
            raise InputError(
                f"--set {field_name}=...: properties are built from the file's leftover "
                "columns and cannot be set"
            )
        if not text:
            raise InputError(f"--set {field_name}=: needs a value")
        (parsed,) = con.execute(f"SELECT {_coerce(f, _lit(text), 'VARCHAR')}").fetchone()
        if parsed is None:
            raise InputError(
                f"--set {field_name}={text}: cannot parse {_EXPECT.get(f.kind, f.kind.value)}"
            )


def _as_frame(obj: Any) -> Any:
    if isinstance(obj, pd.DataFrame | pa.Table | pa.RecordBatch):
        return obj
    raise InputError(f"cannot ingest a {type(obj).__name__}: pass a path, DataFrame or Arrow table")


def _stage(
    con: duckdb.DuckDBPyConnection,
    tbl: Table,
    src: _Source,
    src_cols: dict[str, str],
    by_field: dict[str, str],
    extras: list[str],
    constants: Mapping[str, Any],
) -> None:
    """Read, coerce and validate in one pass into ``_vr_stage``.

    Columns: _row, _line, the canonical fields, properties, _bad (the record fails
    validation), _raw (the original record as JSON, kept only for bad records), _nonfinite
    (the properties fields holding NaN or Infinity, NULL when none) and, for JSON
    Lines, _malformed (why a line is no record at all). The columns of the levels in between
    (which also hold the source's columns) are named ``__vr_*``, clear of any input column.
    """
    user_cols = [c for c in src_cols if c not in _INTERNAL]
    # Nested projections so each expression is computed once per record: texts (trimmed,
    # empty -> NULL) -> typed fields -> __vr_nonfinite -> __vr_bad -> output.
    keep = [ROW, LINE, *[_ident(c) for c in user_cols]]
    texts, typed, bad = [], [], []
    outer = [f"{ROW} AS _row", f"{LINE} AS _line"]
    if MALFORMED in src_cols:
        keep += [MALFORMED, RAWTEXT]
        bad.append(f"({MALFORMED} IS NOT NULL)")
        outer.append(f"{MALFORMED} AS _malformed")
    props = None
    if "properties" in by_field:
        col = by_field["properties"]
        props, t = "__vr_v_properties", "__vr_t_properties"
        texts.append(f"{_json_text(_ident(col), src_cols[col])} AS {t}")
        typed.append(f"{_json_object(t)} AS {props}")
        bad.append(f"({t} IS NOT NULL AND {props} IS NULL)")
    for f in tbl.fields:
        if f.kind is Kind.JSON:
            continue
        col = by_field.get(f.name)
        t, v = f"__vr_t_{f.name}", f"__vr_v_{f.name}"
        if col is not None:
            if _is_numeric(src_cols[col]) or _is_temporal(src_cols[col]):
                texts.append(f"{_ident(col)} AS {t}")  # typed source: no text round trip
            else:
                texts.append(f"{_source_text(_ident(col), src_cols[col])} AS {t}")
            expr = _coerce(f, t, src_cols[col], pretrimmed=True)
            if f.kind is Kind.ID and _floats_written_as_text(con, src, col, src_cols[col]):
                expr = f"regexp_replace({expr}, '\\.0+$', '')"
            # present but unparseable is bad whether or not the field is required
            bad.append(f"({t} IS NOT NULL AND {v} IS NULL)")
        else:
            expr = f"CAST(NULL AS {f.sql_type})"
        if f.name in constants:
            # a default fills a missing column or an empty cell; a value that is present but
            # unparseable stays NULL so the row is quarantined, not silently overwritten
            const = _coerce(f, _lit(str(constants[f.name])), "VARCHAR")
            expr = const if col is None else f"CASE WHEN {t} IS NULL THEN {const} ELSE {expr} END"
        if f.required:
            bad.append(f"({v} IS NULL)")
        typed.append(f"{expr} AS {v}")
        outer.append(f"{v} AS {f.name}")
    outer.append(f"{_properties_expr(props, extras, src)} AS properties")
    if RAWTEXT in src_cols:
        raw = RAWTEXT
    elif user_cols:
        raw = f"CAST({_pack(user_cols, src)} AS VARCHAR)"
    else:
        raw = "NULL"
    outer.append("__vr_bad AS _bad")
    outer.append(f"CASE WHEN __vr_bad THEN {raw} END AS _raw")
    outer.append("__vr_nonfinite AS _nonfinite")
    bad.append("(__vr_nonfinite IS NOT NULL)")
    bad_expr = f"coalesce({' OR '.join(bad) or 'false'}, false)"
    nonfinite = _nonfinite_fields(props, extras, src_cols, src)
    level1 = f"SELECT {', '.join(keep + texts)} FROM ({src.sql})"
    level2 = f"SELECT *, {', '.join(typed)} FROM ({level1})"
    level3 = f"SELECT *, {nonfinite} AS __vr_nonfinite FROM ({level2})"
    level4 = f"SELECT *, {bad_expr} AS __vr_bad FROM ({level3})"
    con.execute("DROP TABLE IF EXISTS _vr_stage")
    con.execute(f"CREATE TEMP TABLE _vr_stage AS SELECT {', '.join(outer)} FROM ({level4})")


#: an integer written by a float column: pandas writes ``1.0`` for the id 1 of an integer
#: column that holds a missing value
_FLOAT_INT_RE = r"-?[0-9]+\.0+"


def _floats_written_as_text(
    con: duckdb.DuckDBPyConnection, src: _Source, col: str, src_type: str
) -> bool:
    """Whether every value of the text column ``col`` is an integer written as a float.

    Such a column (an id column pandas held as float, saved as CSV or JSON) gives ids
    ``1``, ``42`` as the same column read from Parquet does (:func:`_number_text`), not
    ``1.0``: else a CSV and a Parquet export of one table would name different users, and
    no item of the catalogue would match. Decided for the whole column, so a text id that
    merely looks like a version number (``2.0`` beside ``2.1``) is kept as written. The
    first value is checked before the whole column, so other columns cost one row.
    """
    if _is_numeric(src_type) or _is_temporal(src_type):
        return False
    t = _source_text(_ident(col), src_type)
    rows = f"FROM ({src.sql}) WHERE {t} IS NOT NULL"
    first = con.execute(f"SELECT {t} {rows} LIMIT 1").fetchone()
    if first is None or not re.fullmatch(_FLOAT_INT_RE, str(first[0])):
        return False
    (every,) = con.execute(
        f"SELECT bool_and(regexp_full_match({t}, '{_FLOAT_INT_RE}')) {rows}"
    ).fetchone()
    return bool(every)


def _json_text(col: str, src_type: str) -> str:
    """A ``properties`` source column as JSON text: typed columns (struct, map) via to_json."""
    if src_type.upper() in ("VARCHAR", "JSON"):
        return _source_text(col, src_type)
    return f"CAST(to_json({col}) AS VARCHAR)"


def _pack(cols: list[str], src: _Source) -> str:
    """Columns as one JSON object keyed by their names in the source.

    json_object rather than to_json(struct_pack(...)): a key may be any text (a JSON Lines
    key "" has no column name), and a JSON value is kept as JSON.
    """
    return "json_object(" + ", ".join(f"{_lit(src.key(c))}, {_ident(c)}" for c in cols) + ")"


def _json_object(text: str) -> str:
    """``text`` as JSON when it is a JSON object, else NULL (invalid JSON, array, scalar).

    CASE, not AND: DuckDB may evaluate both sides of AND, and json_type fails on bad JSON.
    """
    return (
        f"CASE WHEN json_valid({text}) THEN "
        f"CASE WHEN json_type({text}) = 'OBJECT' THEN CAST({text} AS JSON) END END"
    )


#: JSON has no NaN or Infinity (RFC 8259), but DuckDB's reader accepts them in any case
#: (``NaN``, ``nan``, ``inf``, ``-Infinity``): PostgreSQL's json refuses the whole file over
#: one, and the API cannot answer with one. Outside its strings, valid JSON holds no other
#: word with these letters (true, false, null and exponents have none).
_NONFINITE_WORD = "(?i)nan|inf"
#: a JSON string, escapes included (removed before looking for those words)
_JSON_STRING = r'"(?:[^"\\]|\\.)*"'


def _has_nonfinite(text: str) -> str:
    """SQL: the JSON text ``text`` holds a NaN or Infinity number (not a string saying so).

    The words are looked for in the whole text first (cheap, and nearly always absent), and
    only then outside its strings.
    """
    outside = f"regexp_replace({text}, '{_JSON_STRING}', '', 'g')"
    return (
        f"CASE WHEN regexp_matches({text}, '{_NONFINITE_WORD}') "
        f"THEN regexp_matches({outside}, '{_NONFINITE_WORD}') ELSE false END"
    )


def _nonfinite_fields(
    props: str | None, extras: list[str], src_cols: dict[str, str], src: _Source
) -> str:
    """SQL: the ``properties`` fields of a record holding NaN or Infinity (NULL: none).

    Such a record is quarantined, the rule the API applies to a posted ``properties`` (422):
    JSON cannot carry the number, and silently storing null instead would lose what the
    input said. A float column the properties gather from is checked as a number; a JSON
    value (a JSON Lines key, a ``properties`` object) or a nested column as its JSON text.
    """
    checks = []
    if props is not None:
        checks.append((_has_nonfinite(f"CAST({props} AS VARCHAR)"), "properties"))
    for c in extras:
        typ = src_cols[c].upper()
        if typ in ("DOUBLE", "FLOAT", "REAL"):
            checks.append((f"coalesce(NOT isfinite({_ident(c)}), false)", src.key(c)))
        elif typ == "JSON":
            checks.append((_has_nonfinite(f"CAST({_ident(c)} AS VARCHAR)"), src.key(c)))
        elif any(w in typ for w in ("DOUBLE", "FLOAT", "REAL")):  # a struct, list or map
            checks.append((_has_nonfinite(f"CAST(to_json({_ident(c)}) AS VARCHAR)"), src.key(c)))
    if not checks:
        return "CAST(NULL AS VARCHAR)"
    named = ", ".join(f"CASE WHEN {cond} THEN {_lit(name)} END" for cond, name in checks)
    return f"nullif(concat_ws(', ', {named}), '')"


def _properties_expr(props: str | None, extras: list[str], src: _Source) -> str:
    """Leftover columns as one JSON object, merged over a valid ``properties`` column if given.

    ``props``: the column holding the source's ``properties`` already parsed as an object.
    """
    parts = []
    if props is not None:
        parts.append(props)
    if extras:
        parts.append(_pack(extras, src))
    if not parts:
        return "CAST(NULL AS JSON)"
    if len(parts) == 1:
        return parts[0]
    return f"CAST(json_merge_patch(coalesce({parts[0]}, '{{}}'), {parts[1]}) AS JSON)"


_CONTENT = ("user_id", "item_id", "event_type", "timestamp", "value", "quantity", "rating")


def _key_events(con: duckdb.DuckDBPyConnection, local: bool = True) -> str:
    """Decide which valid events are new; returns a SELECT of them (with ``_row``).

    An event's identity is its ``event_id`` when given; otherwise its content plus its
    ``occurrence``: the index of the record among identical records of the same source
    (0 for the first). Repeats inside a file (two identical purchases on one day) are thus
    all kept, while ingesting the file again matches every record to a stored one.

    Identity is compared column by column (DuckDB hashes them inside the join) rather than
    through a persisted hash, so nothing depends on a hash function staying the same across
    library versions; ``hash()`` below only pre-selects candidate repeats within this run.

    ``local``: the stored events are on ``con``, so rows already stored are dropped here;
    otherwise the store drops them as it writes (the numbering within the file is the same).
    """
    content = ", ".join(_CONTENT)
    con.execute("DROP TABLE IF EXISTS _vr_rep")
    con.execute(
        f"""CREATE TEMP TABLE _vr_rep AS
        WITH h AS (SELECT _row, CASE WHEN event_id IS NOT NULL THEN hash(event_id)
                                ELSE hash({content}) END AS hh
                   FROM _vr_stage WHERE NOT _bad),
        cand AS (SELECT _row FROM h WHERE hh IN (SELECT hh FROM h GROUP BY hh HAVING count(*) > 1)),
        c AS (SELECT s.* FROM _vr_stage s SEMI JOIN cand USING (_row))
        SELECT _row, true AS by_id,
            row_number() OVER (PARTITION BY event_id ORDER BY _row) - 1 AS occ
        FROM c WHERE event_id IS NOT NULL
        UNION ALL
        SELECT _row, false, row_number() OVER (PARTITION BY {content} ORDER BY _row) - 1
        FROM c WHERE event_id IS NULL"""
    )
    con.execute("DROP TABLE IF EXISTS _vr_skip")
    con.execute("CREATE TEMP TABLE _vr_skip (_row BIGINT)")
    if local and con.execute("SELECT count(*) FROM events").fetchone()[0]:
        same = " AND ".join(f"e.{c} IS NOT DISTINCT FROM s.{c}" for c in _CONTENT)
        con.execute(
            f"""INSERT INTO _vr_skip
            SELECT s._row FROM _vr_stage s
                SEMI JOIN (SELECT event_id FROM events WHERE event_id IS NOT NULL) e
                ON e.event_id = s.event_id
            WHERE NOT s._bad AND s.event_id IS NOT NULL
            UNION ALL
            SELECT s._row FROM (
                SELECT s.*, coalesce(r.occ, 0) AS occurrence
                FROM _vr_stage s LEFT JOIN _vr_rep r USING (_row)
                WHERE NOT s._bad AND s.event_id IS NULL) s
            SEMI JOIN (SELECT * FROM events WHERE event_id IS NULL) e
                ON {same} AND e.occurrence = s.occurrence"""
        )
    return """SELECT s.*, CASE WHEN r.by_id THEN 0 ELSE coalesce(r.occ, 0) END AS occurrence
        FROM _vr_stage s LEFT JOIN _vr_rep r USING (_row)
        WHERE NOT s._bad AND NOT coalesce(r.by_id AND r.occ > 0, false)
            AND s._row NOT IN (SELECT _row FROM _vr_skip)"""


#: An entity's properties without null values: an empty cell is no value, so it neither
#: stores a null (which a merge would then read as "remove") nor removes a stored property,
#: and re-ingesting a file leaves the stored object exactly as it is.
_NO_NULLS = "CAST(json_merge_patch('{}', properties) AS JSON)"


def _key_entities(
    con: duckdb.DuckDBPyConnection, tbl: Table, supplied: frozenset[str], local: bool = True
) -> str:
    """Items/users: the last row per id, unless the upsert would not change the stored row.

    The upsert (:meth:`Store.append_staged`) changes only the ``supplied`` fields and merges
    ``properties``, so "unchanged" compares exactly those. Not ``local``: the store compares
    with its rows as it writes.
    """
    key = tbl.key
    same = " AND ".join(
        [f"s.{c} IS NOT DISTINCT FROM t.{c}" for c in updated_columns(tbl, supplied)]
        + [
            f"CAST({merge_properties('t.properties', 's.properties')} AS VARCHAR) "
            "IS NOT DISTINCT FROM CAST(t.properties AS VARCHAR)"
        ]
    )
    unchanged = f"EXISTS (SELECT 1 FROM {tbl.name} t WHERE t.{key} = s.{key} AND {same})"
    con.execute("DROP TABLE IF EXISTS _vr_new")
    con.execute(
        f"""CREATE TEMP TABLE _vr_new AS
        WITH latest AS (SELECT * REPLACE ({_NO_NULLS} AS properties) FROM _vr_stage
            WHERE NOT _bad
            QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY _row DESC) = 1)
        SELECT s.* FROM latest s WHERE NOT {unchanged if local else "false"}"""
    )
    return "SELECT * FROM _vr_new"


def _quarantine_rows(
    con: duckdb.DuckDBPyConnection,
    tbl: Table,
    src: _Source,
    name: str,
    by_field: dict[str, str],
    local: bool = True,
) -> int:
    """``_vr_bad``: one row per rejected record with field(s), reason(s) and the raw record.

    Returns how many lines the reader itself rejected (they have no record number). Rows
    already in the quarantine are dropped here when it is on ``con`` (``local``), else by the
    store as it writes.
    """
    fields, reasons = [], []
    # JSON Lines: a line that is no record at all says why (_stage)
    malformed, why_malformed = (
        ("_malformed IS NOT NULL", "_malformed") if src.fmt == "jsonl" else ("false", "NULL")
    )
    for f in tbl.fields:
        col = by_field.get(f.name)
        if col is None and not f.required:
            continue
        got = f.name
        if col is not None:
            # the value as the record gave it, under whichever spelling of the key it used
            # (JSON Lines keys differing only in case are one column), as _read_jsonl reads it
            value = ", ".join(f"_raw->>{_json_key(k)}" for k in src.keys.get(col, [col]))
            raw = _text(f"CASE WHEN json_valid(_raw) THEN coalesce({value}) END")
            if f.kind is Kind.JSON:
                # as in _stage: present but not a JSON object (the row also holds leftover
                # columns, so the stored properties column cannot tell)
                cond_bad = f"{raw} IS NOT NULL AND {_json_object(raw)} IS NULL"
                fields.append(f"CASE WHEN {cond_bad} THEN '{f.name}' END")
                reasons.append(
                    f"CASE WHEN {cond_bad} THEN "
                    f"'cannot parse {_EXPECT[Kind.JSON]} from ' || {raw} END"
                )
                continue
            cond_bad = f"{raw} IS NOT NULL AND {got} IS NULL"
            why = f"'cannot parse {_EXPECT.get(f.kind, f.kind.value)} from ' || {raw}"
            fields.append(f"CASE WHEN {cond_bad} THEN '{f.name}' END")
            reasons.append(f"CASE WHEN {cond_bad} THEN {why} END")
            if not f.required:
                continue
            cond_missing = f"{raw} IS NULL AND {got} IS NULL"
        else:
            cond_missing = f"{got} IS NULL"
        fields.append(f"CASE WHEN {cond_missing} THEN '{f.name}' END")
        reasons.append(f"CASE WHEN {cond_missing} THEN 'missing required value' END")
    # properties holding NaN or Infinity, named by _stage (they may come from any column)
    fields.append("_nonfinite")
    reasons.append(
        "CASE WHEN _nonfinite IS NOT NULL THEN "
        "'NaN or Infinity: JSON has no such number (leave the value empty for none)' END"
    )
    con.execute("DROP TABLE IF EXISTS _vr_bad")
    (any_bad,) = con.execute("SELECT EXISTS (SELECT 1 FROM _vr_stage WHERE _bad)").fetchone()
    if not any_bad:
        # the same columns, without the expressions that say why: binding them took 30 ms,
        # most of a clean one-event POST /events
        fields = reasons = ["CAST(NULL AS VARCHAR)"]
        malformed = why_malformed = "NULL"
    con.execute(
        f"""CREATE TEMP TABLE _vr_bad AS
        SELECT _row AS row, _line AS line,
            CASE WHEN {malformed} THEN '(line)'
                ELSE concat_ws(', ', {", ".join(fields) or "NULL"}) END AS field,
            CASE WHEN {malformed} THEN {why_malformed}
                ELSE concat_ws('; ', {", ".join(reasons) or "NULL"}) END AS reason,
            _raw AS raw
        FROM _vr_stage WHERE _bad"""
    )
    n_rejects = _csv_lines(con, src) if src.fmt == "csv" else 0
    con.execute(
        f"""ALTER TABLE _vr_bad ADD COLUMN quarantine_key UUID;
        UPDATE _vr_bad SET quarantine_key = CAST(md5(concat_ws({SEP}, {_lit(tbl.name)},
            {_lit(name)}, coalesce(line, -1), coalesce(row, -1), raw)) AS UUID)"""
    )
    if local:
        con.execute(
            "DELETE FROM _vr_bad b WHERE EXISTS "
            "(SELECT 1 FROM quarantine q WHERE q.quarantine_key = b.quarantine_key)"
        )
    return n_rejects


def _csv_lines(con: duckdb.DuckDBPyConnection, src: _Source) -> int:
    """Give CSV rejects and bad records the text line where they start.

    The reader numbers the records it accepted (``row``), and each line it rejects by its
    *unit*: the header, every blank line and every record count one, however many text lines
    a quoted field spans. Only when the file has bad rows is it scanned once more
    (:func:`_csv_layout`; a clean file is read once) for where its blank lines and
    multi-line records are, which turns both numberings into text lines. When the scan does
    not agree with the reader, ``line`` stays NULL: no line rather than a wrong one. Returns
    the number of rejected lines.
    """
    # One entry per rejected line: the reader reports a line once per missing or extra
    # column. csv_line holds the blank lines before the record too.
    rejects: dict[int, tuple[str, list[str], dict[str, str]]] = {}
    for unit, text, kind, column, message in con.execute(
        "SELECT line, csv_line, error_type, column_name, error_message FROM _vr_rejects "
        "ORDER BY line, column_idx"
    ).fetchall():
        _, fields, reasons = rejects.setdefault(int(unit) - 1, (text.lstrip("\r\n"), [], {}))
        if (column or "(line)") not in fields:
            fields.append(column or "(line)")
        reasons.setdefault(str(kind), f"{str(kind).lower()}: {message.splitlines()[0]}")
    rows = np.array(
        [r for (r,) in con.execute("SELECT row FROM _vr_bad ORDER BY row").fetchall()],
        dtype=np.int64,
    )
    if not rejects and not len(rows):
        return 0
    units = np.fromiter(rejects, dtype=np.int64, count=len(rejects))
    layout = None
    if src.path is not None and src.dialect is not None:
        layout = _csv_layout(src.path, src.dialect)
    if layout is not None and not layout.fits(units, rows):
        log.warning("%s: its quarantined rows get no line: the line scan disagrees", src.path)
        layout = None
    if len(rows) and layout is not None:
        # the k-th accepted record is the k-th unit after the header that is neither blank
        # nor rejected; accepted units before the j-th (1-based) excluded one: its index - j
        skipped = np.union1d(layout.blank[layout.blank > 0], units)
        before = skipped - np.arange(1, len(skipped) + 1)
        record_units = rows + np.searchsorted(before, rows, side="left")
        con.register("_vr_phys", pd.DataFrame({"row": rows, "line": layout.line(record_units)}))
        con.execute("UPDATE _vr_bad b SET line = p.line FROM _vr_phys p WHERE b.row = p.row")
        con.unregister("_vr_phys")
    if rejects:
        no_line = pd.array([None] * len(rejects), dtype="Int64")
        frame = pd.DataFrame(
            {
                "row": no_line,
                "line": no_line if layout is None else layout.line(units),
                "field": [", ".join(r[1]) for r in rejects.values()],
                "reason": ["; ".join(r[2].values()) for r in rejects.values()],
                "raw": [r[0] for r in rejects.values()],
            }
        )
        con.register("_vr_rej", frame)
        con.execute("INSERT INTO _vr_bad SELECT * FROM _vr_rej")
        con.unregister("_vr_rej")
    return len(rejects)


@dataclass
class _Layout:
    """A CSV file's units as its reader numbers them from 0 (the header)."""

    units: int  # how many
    blank: np.ndarray  # the blank lines' units, ascending
    multi: np.ndarray  # the units of records spanning several text lines, ascending
    extra: np.ndarray  # text lines those records add, cumulated

    def line(self, units: np.ndarray) -> np.ndarray:
        """The text line (1-based) where each unit starts."""
        extra = np.concatenate([[0], self.extra]).astype(np.int64)
        return units + 1 + extra[np.searchsorted(self.multi, units, side="left")]

    def fits(self, rejected: np.ndarray, rows: np.ndarray) -> bool:
        """Whether this scan agrees with the reader: its rejects are records, not blank
        lines, and there are units enough for the last bad record."""
        if len(rejected) and (rejected.max() >= self.units or np.isin(rejected, self.blank).any()):
            return False
        skipped = len(np.union1d(self.blank[self.blank > 0], rejected))
        return not len(rows) or int(rows.max()) <= self.units - 1 - skipped


_CHUNK = 1 << 24
_BOM = b"\xef\xbb\xbf"


def _csv_layout(path: Path, dialect: _Dialect) -> _Layout | None:
    """Scan a CSV file for its blank lines and the records whose quoted fields hold newlines.

    Follows the reader's state machine, vectorised over chunks (about a second for 5 million
    rows). Counting every quote for parity is not enough: a quote opens a field only at the
    field's start (``5" screen`` is data, as the reader takes it), and an escape character
    escapes exactly one byte (``"c:\\\\"`` ends with a closing quote). So each run of
    consecutive quotes acts on "inside a quoted field" by its length's parity:

    - at a field's start, an odd run toggles it (opens, or closes after escaped quotes);
    - elsewhere, an odd run closes the field if one is open, and is data if not: either
      way it leaves "outside";
    - an even run is escaped quotes (or an empty field): no change.

    With an escape character other than the quote, a quote after an odd run of escape
    characters is escaped and left out first. Without a quote character every newline ends
    a record. None when the dialect has a multi-byte quote or escape, which this scan cannot
    follow.
    """
    q, esc, delim = (c.encode() for c in (dialect.quote, dialect.escape, dialect.delim))
    if len(q) > 1 or len(esc) > 1 or not delim:
        return None
    nl, cr = (13, -1) if dialect.newline == "\\r" else (10, 13)  # "\r\n": a lone "\r" is blank
    # a quote run starts a field after these (a multi-byte delimiter: after its last byte)
    starts_field = np.zeros(256, dtype=bool)
    starts_field[[delim[-1], 10, 13]] = True
    blank, inside_units = [], []
    units = 0
    inside = False  # within a quoted field at the end of the last chunk
    with open(path, "rb") as fh:
        head = fh.read(len(_BOM))
        # a byte order mark is not part of the first field: the scan starts after it
        offset = len(head) if head == _BOM else 0  # file position of the chunk's first byte
        pending = b"" if offset else head
        last_end = offset - 1  # file position of the last unit's newline
        while True:
            data = fh.read(_CHUNK)
            buf = pending + data
            if data:
                # chunks end just after a newline, so no quote or escape run spans two of
                # them and each starts where a field would
                cut = buf.rfind(bytes([nl])) + 1
                if not cut:
                    pending = buf
                    continue
                buf, pending = buf[:cut], buf[cut:]
            elif not buf:
                break
            a = np.frombuffer(buf, dtype=np.uint8)
            nls = np.flatnonzero(a == nl)
            at = np.flatnonzero(a == q[0]) if q else np.empty(0, dtype=np.int64)
            if esc and esc != q and len(at):
                at = at[~_escaped(a, at, esc[0])]
            inside_nl, inside = _inside_quotes(a, at, nls, starts_field, inside)
            ends = ~inside_nl
            unit_of = units + np.cumsum(ends) - ends  # the unit each newline is in
            inside_units.append(unit_of[inside_nl])
            end_at = nls[ends] + offset
            starts = np.concatenate([[last_end + 1], end_at[:-1] + 1])
            size = end_at - starts
            before_nl = np.where(nls[ends] > 0, a[np.maximum(nls[ends] - 1, 0)], nl)
            empty = (size == 0) | ((size == 1) & (before_nl == cr))
            blank.append(unit_of[ends][empty])
            if len(end_at):
                last_end = int(end_at[-1])
            units += len(end_at)
            offset += len(a)
            if not data:
                break
    if offset - 1 > last_end:
        units += 1  # a last record without a newline
    multi, counts = np.unique(np.concatenate(inside_units), return_counts=True)
    return _Layout(units, np.concatenate(blank), multi, np.cumsum(counts))


def _escaped(a: np.ndarray, at: np.ndarray, esc: int) -> np.ndarray:
    """Which of the quotes at positions ``at`` follow an odd run of escape characters."""
    e = np.flatnonzero(a == esc)
    if not len(e):
        return np.zeros(len(at), dtype=bool)
    # the first position of the run of escape characters each one belongs to
    first = np.diff(e, prepend=-2) != 1
    run_start = e[np.maximum.accumulate(np.where(first, np.arange(len(e)), 0))]
    j = np.searchsorted(e, at) - 1  # the last escape character before each quote
    jj = np.maximum(j, 0)
    touching = (j >= 0) & (e[jj] == at - 1)
    return touching & ((at - run_start[jj]) % 2 == 1)


def _inside_quotes(
    a: np.ndarray, at: np.ndarray, nls: np.ndarray, starts_field: np.ndarray, inside: bool
) -> tuple[np.ndarray, bool]:
    """Whether each newline at ``nls`` lies inside a quoted field, and whether the chunk ends
    inside one; ``at``: the quotes that count, ``starts_field``: a lookup of the bytes after
    which a field starts, ``inside``: the state at the chunk's start.

    Even quote runs change nothing (see :func:`_csv_layout`); of the odd ones, those at a
    field's start toggle the state and the others reset it to "outside", so the state is the
    parity of the toggles since the last reset.
    """
    if len(at):
        first = np.empty(len(at), dtype=bool)
        first[0] = True
        np.not_equal(at[1:], at[:-1] + 1, out=first[1:])
        run_idx = np.flatnonzero(first)
        odd = (np.diff(run_idx, append=len(at)) & 1).astype(bool)
        pos = at[run_idx[odd]]
    else:
        pos = at
    if not len(pos):
        return np.full(len(nls), inside), inside
    toggle = starts_field[a[pos - 1]]
    if pos[0] == 0:  # the byte before the chunk is a newline (or there is none)
        toggle[0] = True
    toggles = np.cumsum(toggle)
    # toggles counted at the last reset: they only grow, so the running maximum finds it
    state = (toggles - np.maximum.accumulate(np.where(toggle, 0, toggles))) & 1
    if inside:  # before the first reset, the state carried in counts
        state[: len(toggle) if toggle.all() else int(np.argmin(toggle))] ^= 1
    states = np.concatenate([[int(inside)], state]).astype(bool)
    return states[np.searchsorted(pos, nls)], bool(states[-1])


def _write(
    store: Store,
    tbl: Table,
    new_sql: str,
    name: str,
    started: float,
    batch_size: int,
    n_rejects: int,
    report: Progress,
    supplied: frozenset[str] | None = None,
) -> IngestResult:
    """Commit the new rows and ``_vr_bad`` in batches of records, one transaction each.

    The rows are read from the staging connection and handed to the store, which writes them
    in its own engine (:meth:`Store.append_staged`, :meth:`Store.append_quarantine`).
    """
    con = store.compute
    n_valid, n_bad_rows, max_row = con.execute(
        "SELECT count(*) FILTER (NOT _bad), count(*) FILTER (_bad), coalesce(max(_row), 0) "
        "FROM _vr_stage"
    ).fetchone()
    n_new = 0
    run_id = int(store.fetch("SELECT coalesce(max(run_id), 0) + 1 FROM ingest_runs")[0][0])
    cols = ", ".join(tbl.names)
    extra = "occurrence" if tbl is EVENTS else "now()::TIMESTAMP AS updated_at"
    n_batches = max(1, -(-int(max_row) // batch_size))
    for b in range(n_batches):
        lo, hi = b * batch_size + 1, (b + 1) * batch_size
        last = b == n_batches - 1
        # rejected CSV lines have no record number: they travel with the last batch
        bad_cond = f"row BETWEEN {lo} AND {hi}" + (" OR row IS NULL" if last else "")
        with store.transaction():
            rows = f"SELECT {cols}, {extra} FROM ({new_sql}) WHERE _row BETWEEN {lo} AND {hi}"
            n_new += store.append_staged(tbl, con, rows, supplied)
            store.append_quarantine(
                con,
                f"SELECT quarantine_key, CAST({run_id} AS BIGINT) AS run_id, "
                f"{_lit(tbl.name)} AS kind, {_lit(name)} AS source, line, row, field, reason, "
                f"raw, now()::TIMESTAMP AS quarantined_at FROM _vr_bad WHERE {bad_cond}",
            )
            if last:
                rows_read = int(n_valid + n_bad_rows + n_rejects)
                store.execute(
                    "INSERT INTO ingest_runs VALUES (?, ?, ?, to_timestamp(?)::TIMESTAMP, "
                    "now()::TIMESTAMP, ?, ?, ?, ?)",
                    [run_id, tbl.name, name, started, rows_read, int(n_new),
                     int(n_valid - n_new), int(n_bad_rows + n_rejects)],
                )  # fmt: skip
        log.info("committed batch %d/%d of %s", b + 1, n_batches, name)
        report("writing", b + 1, n_batches)
    return IngestResult(
        source=name,
        kind=tbl.name,
        run_id=run_id,
        rows_read=int(n_valid + n_bad_rows + n_rejects),
        stored=int(n_new),
        duplicates=int(n_valid - n_new),
        quarantined=int(n_bad_rows + n_rejects),
        seconds=round(time.time() - started, 3),
    )
