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
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
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


def _text(col: str) -> str:
    return f"nullif(trim(CAST({col} AS VARCHAR)), '')"


# Plain ISO text (date, optional time, no zone): the fast TIMESTAMP cast reads it exactly.
_DATE_RE = r"[0-9]{4}[-/][0-9]{1,2}[-/][0-9]{1,2}"
_PLAIN_RE = _DATE_RE + r"([T ][0-9]{1,2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?)?"
# A date and time followed by something else (an offset, a zone name, a word): the plain cast
# would silently drop the rest, so these go through TIMESTAMPTZ, which converts an offset or a
# zone it knows (``Z``, ``+01:00``, ``+01:30:15``, ``EST``, ``Europe/Paris``) and rejects the
# rest (``PM``, ``BC``, ``foo``).
_ZONED_RE = "^" + _DATE_RE + "[T ][0-9]"
#: digits-only timestamps (whole text): eight are a YYYYMMDD date, up to eleven (with an
#: optional fraction) epoch seconds. The API reads posted events by the same rules.
YYYYMMDD_RE = r"[0-9]{8}"
EPOCH_SECONDS_RE = r"-?[0-9]{1,11}(\.[0-9]*)?"


def _parse_timestamp(col: str, src_type: str, *, pretrimmed: bool = False) -> str:
    """SQL that turns a column into naive-UTC TIMESTAMP, or NULL when it cannot be parsed.

    Accepts ISO 8601 (with or without an offset or a zone name DuckDB's TIMESTAMPTZ knows),
    ``YYYYMMDD`` and epoch seconds. Eight digits are read as a date, never as epoch seconds
    (which would be 1970-04 at most). Plain ISO text takes the much faster plain cast; any
    other text after the time goes through TIMESTAMPTZ, so a zone is converted and trailing
    words are rejected instead of being dropped.
    """
    if _is_temporal(src_type):
        return f"CAST({col} AS TIMESTAMP)"
    t = f"CAST({col} AS VARCHAR)" if pretrimmed else _text(col)
    return (
        f"CASE WHEN regexp_full_match({t}, '{_PLAIN_RE}') THEN try_cast({t} AS TIMESTAMP) "
        f"WHEN regexp_matches({t}, '{_ZONED_RE}') "
        f"THEN CAST(try_cast({t} AS TIMESTAMPTZ) AS TIMESTAMP) "
        f"WHEN regexp_full_match({t}, '{YYYYMMDD_RE}') THEN try_strptime({t}, '%Y%m%d') "
        f"WHEN regexp_full_match({t}, '{EPOCH_SECONDS_RE}') "
        f"THEN CAST(to_timestamp(CAST({t} AS DOUBLE)) AS TIMESTAMP) END"
    )


def _coerce(f: Field, col: str, src_type: str, *, pretrimmed: bool = False) -> str:
    """SQL that coerces source column ``col`` to field ``f`` (NULL where it cannot).

    ``pretrimmed``: ``col`` already went through :func:`_text` (or is a typed column).
    """
    t = col if pretrimmed else _text(col)
    if f.kind is Kind.ID and src_type.upper().startswith(("FLOAT", "DOUBLE", "DECIMAL")):
        # An integer id column holding a missing value is float in pandas: 1.0 must be the
        # id "1", as the same column read from a CSV gives, not another user "1.0".
        return (
            f"CASE WHEN {t} = trunc({t}) AND abs({t}) < 9007199254740992 "
            f"THEN CAST(CAST({t} AS BIGINT) AS VARCHAR) ELSE CAST({t} AS VARCHAR) END"
        )
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
    Kind.TIMESTAMP: "a timestamp (ISO 8601, YYYYMMDD or epoch seconds)",
    Kind.JSON: "a JSON object",
}


# --------------------------------------------------------------------------------------------
# Sources: a SELECT yielding _row (record number), _line (text line, if known) and the columns
# --------------------------------------------------------------------------------------------
_INTERNAL = frozenset({"_row", "_line", "_malformed", "_rawtext"})


def detect_format(path: Path, fmt: str | None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise InputError(
                f"{path}: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}"
            )
        return fmt
    try:
        return _EXTENSIONS[path.suffix.lower()]
    except KeyError:
        raise InputError(
            f"{path}: cannot tell the format from the extension {path.suffix!r}; "
            f"pass --format ({', '.join(FORMATS)})"
        ) from None


def _source_sql(con: duckdb.DuckDBPyConnection, source: Any, fmt: str | None) -> tuple[str, str]:
    """Load ``source`` into temp table ``_vr_src``; returns (a numbered SELECT over it, format).

    The source is copied as is (in parallel, insertion order preserved) so that the record
    number is the table's ``rowid``: numbering with a window function while reading would
    force the whole validation pipeline onto one thread.
    """
    numbered = "SELECT rowid + 1 AS _row, CAST(NULL AS BIGINT) AS _line, * FROM _vr_src"
    con.execute("DROP TABLE IF EXISTS _vr_src")
    if not isinstance(source, str | Path):
        con.register("_vr_frame", _as_frame(source))
        con.execute("CREATE TEMP TABLE _vr_src AS SELECT * FROM _vr_frame")
        return numbered, "table"
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty")
    fmt = detect_format(path, fmt)
    with _exact_path(path) as exact:
        p = _lit(exact)
        if fmt == "csv":
            con.execute("DROP TABLE IF EXISTS _vr_rejects; DROP TABLE IF EXISTS _vr_scans")
            con.execute(
                f"CREATE TEMP TABLE _vr_src AS SELECT * FROM read_csv({p}, all_varchar = true, "
                "header = true, store_rejects = true, rejects_table = '_vr_rejects', "
                "rejects_scan = '_vr_scans')"
            )
        elif fmt == "parquet":
            con.execute(f"CREATE TEMP TABLE _vr_src AS SELECT * FROM read_parquet({p})")
        else:
            _read_jsonl(con, p)
            return "SELECT * FROM _vr_src", fmt
    return numbered, fmt


_GLOB = frozenset("*?[]{}")


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


def _read_jsonl(con: duckdb.DuckDBPyConnection, p: str) -> None:
    """JSON Lines, read line by line so a malformed line is quarantined with its number."""
    con.execute("DROP TABLE IF EXISTS _vr_text")
    con.execute(
        "CREATE TEMP TABLE _vr_text AS SELECT * FROM ("
        "SELECT row_number() OVER () AS _line, rtrim(t, chr(13)) AS _rawtext "
        # a leading UTF-8 byte order mark is not part of the first record
        f"FROM (SELECT unnest(string_split(ltrim(content, chr(65279)), chr(10))) AS t "
        f"FROM read_text({p}))) "
        "WHERE trim(_rawtext) <> ''"
    )
    con.execute(
        "ALTER TABLE _vr_text ADD COLUMN _malformed BOOLEAN; UPDATE _vr_text SET _malformed = "
        "CASE WHEN json_valid(_rawtext) THEN json_type(_rawtext) <> 'OBJECT' ELSE true END"
    )
    keys = [
        k
        for (k,) in con.execute(
            "SELECT k FROM (SELECT DISTINCT unnest(json_keys(_rawtext)) AS k FROM _vr_text "
            "WHERE NOT _malformed) ORDER BY k"
        ).fetchall()
    ]
    # DuckDB column names are case-insensitive: keys differing only in case ("Value" in some
    # lines, "value" in others) are one column, named by the first spelling; a line holding
    # both gives the first spelling's value.
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(k.lower(), []).append(k)
    cols = "".join(
        ", CASE WHEN NOT _malformed THEN coalesce("
        + ", ".join(f"_rawtext->>{_json_key(k)}" for k in spellings)
        + f") END AS {_ident(spellings[0])}"
        for spellings in groups.values()
    )
    con.execute(
        f"CREATE TEMP TABLE _vr_src AS SELECT _line AS _row, _line{cols}, "
        "_malformed, _rawtext FROM _vr_text"
    )
    con.execute("DROP TABLE _vr_text")


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
            src_sql, fmt = _source_sql(con, source, format)
            src_cols = dict(
                con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {src_sql})").fetchall()
            )
            by_field, extras = _resolve_columns(tbl, src_cols, mapping, constants, name)
            _stage(con, tbl, src_sql, src_cols, by_field, extras, constants)
        except duckdb.Error as exc:
            msg = str(exc).strip().splitlines()[0]
            raise InputError(f"{name}: cannot be read as {format or 'its format'}: {msg}") from None
        report("reading", 1, 1)
        report("deduplicating", 0, 1)
        local = store.local
        # the fields this source gives a value (a column or a --set default): an upsert of an
        # item or user changes only these, keeping what an earlier file stored for the others
        supplied = frozenset(by_field) | frozenset(constants)
        new_sql = (
            _key_events(con, local) if tbl is EVENTS else _key_entities(con, tbl, supplied, local)
        )
        n_rejects = _quarantine_rows(con, tbl, fmt, key_name, by_field, local)
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
    src_sql: str,
    src_cols: dict[str, str],
    by_field: dict[str, str],
    extras: list[str],
    constants: Mapping[str, Any],
) -> None:
    """Read, coerce and validate in one pass into ``_vr_stage``.

    Columns: _row, _line, the canonical fields, properties, _bad (the record fails
    validation) and _raw (the original record as JSON, kept only for bad records).
    """
    user_cols = [c for c in src_cols if c not in _INTERNAL]
    # Four nested projections so each expression is computed once per record:
    # texts (trimmed, empty -> NULL) -> typed fields -> _bad -> output.
    keep = ["_row", "_line", *[_ident(c) for c in user_cols]]
    if "_malformed" in src_cols:
        keep += ["_malformed", "_rawtext"]
    texts, typed, bad, outer = [], [], [], ["_row", "_line"]
    if "_malformed" in src_cols:
        bad.append("_malformed")
    props = None
    if "properties" in by_field:
        col = by_field["properties"]
        props = "__v_properties"
        texts.append(f"{_json_text(_ident(col), src_cols[col])} AS __t_properties")
        typed.append(f"{_json_object('__t_properties')} AS {props}")
        bad.append(f"(__t_properties IS NOT NULL AND {props} IS NULL)")
    for f in tbl.fields:
        if f.kind is Kind.JSON:
            continue
        col = by_field.get(f.name)
        t, v = f"__t_{f.name}", f"__v_{f.name}"
        if col is not None:
            if _is_numeric(src_cols[col]) or _is_temporal(src_cols[col]):
                texts.append(f"{_ident(col)} AS {t}")  # typed source: no text round trip
            else:
                texts.append(f"{_text(_ident(col))} AS {t}")
            expr = _coerce(f, t, src_cols[col], pretrimmed=True)
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
    outer.append(f"{_properties_expr(props, extras)} AS properties")
    if "_rawtext" in src_cols:
        raw = "_rawtext"
    elif user_cols:
        packed = ", ".join(f"{_ident(c)} := {_ident(c)}" for c in user_cols)
        raw = f"CAST(to_json(struct_pack({packed})) AS VARCHAR)"
    else:
        raw = "NULL"
    outer.append("_bad")
    outer.append(f"CASE WHEN _bad THEN {raw} END AS _raw")
    bad_expr = f"coalesce({' OR '.join(bad) or 'false'}, false)"
    level1 = f"SELECT {', '.join(keep + texts)} FROM ({src_sql})"
    level2 = f"SELECT *, {', '.join(typed)} FROM ({level1})"
    level3 = f"SELECT *, {bad_expr} AS _bad FROM ({level2})"
    con.execute("DROP TABLE IF EXISTS _vr_stage")
    con.execute(f"CREATE TEMP TABLE _vr_stage AS SELECT {', '.join(outer)} FROM ({level3})")


def _json_text(col: str, src_type: str) -> str:
    """A ``properties`` source column as JSON text: typed columns (struct, map) via to_json."""
    if src_type.upper() in ("VARCHAR", "JSON"):
        return _text(col)
    return f"CAST(to_json({col}) AS VARCHAR)"


def _json_object(text: str) -> str:
    """``text`` as JSON when it is a JSON object, else NULL (invalid JSON, array, scalar).

    CASE, not AND: DuckDB may evaluate both sides of AND, and json_type fails on bad JSON.
    """
    return (
        f"CASE WHEN json_valid({text}) THEN "
        f"CASE WHEN json_type({text}) = 'OBJECT' THEN CAST({text} AS JSON) END END"
    )


def _properties_expr(props: str | None, extras: list[str]) -> str:
    """Leftover columns as one JSON object, merged over a valid ``properties`` column if given.

    ``props``: the column holding the source's ``properties`` already parsed as an object.
    """
    parts = []
    if props is not None:
        parts.append(props)
    if extras:
        packed = ", ".join(f"{_ident(c)} := {_ident(c)}" for c in extras)
        parts.append(f"to_json(struct_pack({packed}))")
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
    fmt: str,
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
    # CASE, not OR: DuckDB may evaluate both sides of OR, and json_type fails on bad JSON
    malformed = (
        "CASE WHEN json_valid(_raw) THEN json_type(_raw) <> 'OBJECT' ELSE true END"
        if fmt == "jsonl"
        else "false"
    )
    for f in tbl.fields:
        col = by_field.get(f.name)
        if col is None and not f.required:
            continue
        got = f.name
        if col is not None:
            raw = f"nullif(trim(CASE WHEN json_valid(_raw) THEN _raw->>{_json_key(col)} END), '')"
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
    con.execute("DROP TABLE IF EXISTS _vr_bad")
    con.execute(
        f"""CREATE TEMP TABLE _vr_bad AS
        SELECT _row AS row, _line AS line,
            CASE WHEN {malformed} THEN '(line)'
                ELSE concat_ws(', ', {", ".join(fields) or "NULL"}) END AS field,
            CASE WHEN {malformed} THEN 'malformed JSON: not a JSON object'
                ELSE concat_ws('; ', {", ".join(reasons) or "NULL"}) END AS reason,
            _raw AS raw
        FROM _vr_stage WHERE _bad"""
    )
    n_rejects = _csv_lines(con) if fmt == "csv" else 0
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


def _csv_lines(con: duckdb.DuckDBPyConnection) -> int:
    """Give CSV rejects their line, and bad records the physical line they came from.

    The reader numbers only the records it accepted (so ``row`` skips rejected lines), and a
    record's line is its number plus the header plus the rejected lines before it. That
    counts each record as one line: after a quoted field spanning several lines, ``line`` is
    the record's position, not the text line (the README says so). Counting text lines
    exactly would need a second pass over the file. Returns the number of rejected lines.
    """
    rejected = con.execute(
        "SELECT line, csv_line, error_type, column_name, error_message FROM _vr_rejects "
        "ORDER BY line"
    ).fetchall()
    lines = np.array([r[0] for r in rejected], dtype=np.int64)
    # good records before the j-th rejected line (1-based j): line_j - header - j
    before = lines - 1 - np.arange(1, len(lines) + 1)
    rows = con.execute("SELECT row FROM _vr_bad ORDER BY row").fetchnumpy()["row"]
    if len(rows):
        phys = np.asarray(rows, dtype=np.int64) + 1 + np.searchsorted(before, rows, side="left")
        con.register("_vr_phys", pd.DataFrame({"row": rows, "line": phys}))
        con.execute("UPDATE _vr_bad b SET line = p.line FROM _vr_phys p WHERE b.row = p.row")
        con.unregister("_vr_phys")
    if rejected:
        frame = pd.DataFrame(
            {
                "row": pd.array([None] * len(rejected), dtype="Int64"),
                "line": lines,
                "field": [r[3] or "(line)" for r in rejected],
                "reason": [f"{str(r[2]).lower()}: {r[4].splitlines()[0]}" for r in rejected],
                "raw": [r[1] for r in rejected],
            }
        )
        con.register("_vr_rej", frame)
        con.execute("INSERT INTO _vr_bad SELECT * FROM _vr_rej")
        con.unregister("_vr_rej")
    return len(rejected)


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
