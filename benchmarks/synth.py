"""Synthetic generator speed: seconds to generate and write 1M events (target: under 30 s).

python benchmarks/synth.py [--events 1000000]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from rich.console import Console
from rich.table import Table

from valuerec.data.synth import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    users = int(args.events / 34)  # about 34 events per user with the default config
    start = time.perf_counter()
    data = generate(users=users, items=5_000, seed=1)
    seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        data.write(tmp, "csv")
    total = time.perf_counter() - start
    n = len(data.events) + len(data.holdout_events)
    table = Table(title="synthetic generator")
    for col in ("users", "events (calibration + holdout)", "generate s", "generate + CSV s",
                "events/s", "target"):  # fmt: skip
        table.add_column(col, justify="right")
    table.add_row(f"{users:,}", f"{n:,}", f"{seconds:.2f}", f"{total:.2f}",
                  f"{n / total:,.0f}", "1M events < 30 s")  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    main()
