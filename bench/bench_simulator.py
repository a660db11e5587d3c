"""Benchmark the synthetic shop: events/second and time relative to writing as many random canonical rows.

    python bench/bench_simulator.py [--events 10000000] [--days 120]

The ratio (simulator time / raw Parquet write time) is measured side by side in the same run, so it does
not depend on the machine; peak RSS comes from resource.getrusage.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shopsight.schema import EVENT_TYPES  # noqa: E402
from shopsight.simulator import EVENTS_SCHEMA, SimulatorParams, generate_shop  # noqa: E402


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers), pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(pa.scalar(prefix), digits, "")


def write_random_events(n_rows: int, path: Path, n_users: int, n_items: int, chunk: int = 2_000_000) -> float:
    """Write n_rows of random canonical-typed events (same schema, row groups, compression); return seconds."""
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    types = pa.array(list(EVENT_TYPES))
    start_ns = 1_767_571_200 * 10**9
    with pq.ParquetWriter(path, EVENTS_SCHEMA, compression="zstd") as writer:
        for lo in range(0, n_rows, chunk):
            n = min(chunk, n_rows - lo)
            table = pa.table(
                {
                    "user_id": _ids("u", rng.integers(0, n_users, n), 6),
                    "item_id": _ids("i", rng.integers(0, n_items, n), 5),
                    "event_type": types.take(pa.array(rng.integers(0, len(EVENT_TYPES), n))),
                    "timestamp": pa.array(np.sort(start_ns + rng.integers(0, 120 * 86_400 * 10**9, n)), pa.timestamp("ns", tz="UTC")),
                    "session_id": _ids("s", np.sort(rng.integers(0, n // 8 + 1, n)) + lo, 9),
                    "category": _ids("c", rng.integers(0, 12, n), 2),
                    "price": pa.array(np.round(rng.lognormal(3, 0.8, n), 2)),
                    "quantity": pa.array(1 + rng.poisson(0.3, n)),
                },
                schema=EVENTS_SCHEMA,
            )
            writer.write_table(table, row_group_size=1_000_000)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000, help="target number of events")
    ap.add_argument("--days", type=int, default=120)
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_sim_") as tmp:
        tmp = Path(tmp)
        # size the population from a small pilot (events scale linearly with users)
        pilot_users = 2_000
        pilot = generate_shop(SimulatorParams(n_users=pilot_users, days=args.days), tmp / "pilot", progress=False)
        n_users = max(100, round(pilot_users * args.events / pilot.n_events))
        params = SimulatorParams(n_users=n_users, days=args.days)

        t0 = time.perf_counter()
        result = generate_shop(params, tmp / "sim", progress=args.progress)
        sim_s = time.perf_counter() - t0
        raw_s = write_random_events(result.n_events, tmp / "raw.parquet", n_users=result.n_users, n_items=params.n_items)

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"simulator: {result.n_events:,} events, {result.n_users:,} users, {result.n_sessions:,} sessions "
          f"(n_users={n_users:,}, days={args.days}) in {sim_s:.1f} s -> {result.n_events / sim_s:,.0f} events/s")
    print(f"raw write of {result.n_events:,} random canonical rows: {raw_s:.1f} s -> {result.n_events / raw_s:,.0f} rows/s")
    print(f"ratio simulator / raw write: {sim_s / raw_s:.2f}x")
    print(f"peak RSS: {peak_mb:,.0f} MiB")


if __name__ == "__main__":
    main()
