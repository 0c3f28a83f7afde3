"""Ingest throughput: valuerec's validated, deduplicated ingest vs DuckDB's bare read_csv.

Both write a synthetic events CSV (default 5 million rows) into a fresh DuckDB file in the
same run. The baseline is DuckDB's own ``CREATE TABLE AS SELECT * FROM read_csv(...)``: no
validation, no quarantine, no dedupe. Target: valuerec >= 0.5 x the baseline's rows/s.

    python benchmarks/ingest.py [--rows 5000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
from rich.console import Console
from rich.table import Table

from valuerec.data.ingest import ingest
from valuerec.data.store import Store
from valuerec.data.synth import generate


def make_csv(rows: int, folder: Path) -> Path:
    """A synthetic events CSV with exactly ``rows`` rows (cached between runs)."""
    path = folder / f"events-{rows}.csv"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    users = max(100, int(rows / 33))  # about 34 events per user with the default config
    data = generate(users=users, items=5_000, seed=7)
    while len(data.events) < rows:
        users = int(users * 1.2 * rows / len(data.events))
        data = generate(users=users, items=5_000, seed=7)
    tmp = path.with_suffix(".tmp")
    pacsv.write_csv(pa.Table.from_pandas(data.events.iloc[:rows], preserve_index=False), tmp)
    tmp.rename(path)
    return path


def baseline(csv: Path, db: Path) -> float:
    start = time.perf_counter()
    con = duckdb.connect(str(db))
    con.execute(f"CREATE TABLE plain AS SELECT * FROM read_csv('{csv}')")
    con.close()
    return time.perf_counter() - start


def ours(csv: Path, db: Path) -> tuple[float, float, int]:
    """Seconds for a first ingest, for a re-ingest of the same file, and rows stored."""
    start = time.perf_counter()
    with Store(db) as store:
        result = ingest(store, csv)
    first = time.perf_counter() - start
    start = time.perf_counter()
    with Store(db) as store:
        again = ingest(store, csv)
        assert again.stored == 0, "re-ingest must add nothing"
    return first, time.perf_counter() - start, result.stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path("bench-data"))
    args = parser.parse_args()
    console = Console()
    with console.status("generating the CSV"):
        csv = make_csv(args.rows, args.data)
    base, first, again = [], [], []
    for k in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            base.append(baseline(csv, Path(tmp) / "plain.duckdb"))
            f, a, stored = ours(csv, Path(tmp) / "store.duckdb")
            assert stored == args.rows, f"stored {stored} of {args.rows}"
            first.append(f)
            again.append(a)
        console.print(f"run {k + 1}: baseline {base[-1]:.2f}s, valuerec {first[-1]:.2f}s")
    b, o, r = (statistics.median(x) for x in (base, first, again))
    n = args.rows
    table = Table(
        title=f"ingest of {n:,} CSV rows into a fresh DuckDB file (median of {args.repeats})"
    )
    for col in ("pipeline", "seconds", "rows/s", "ratio to baseline"):
        table.add_column(col, justify="left" if col == "pipeline" else "right")
    table.add_row("DuckDB read_csv -> plain table (baseline)", f"{b:.2f}", f"{n / b:,.0f}", "1.00")
    table.add_row(
        "valuerec ingest (validate, quarantine, dedupe)",
        f"{o:.2f}",
        f"{n / o:,.0f}",
        f"{b / o:.2f}",
    )
    table.add_row(
        "valuerec re-ingest of the same file (adds 0)", f"{r:.2f}", f"{n / r:,.0f}", f"{b / r:.2f}"
    )
    console.print(table)
    verdict = "meets" if b / o >= 0.5 else "MISSES"
    console.print(f"throughput ratio {b / o:.2f} {verdict} the target of >= 0.5")


if __name__ == "__main__":
    main()
