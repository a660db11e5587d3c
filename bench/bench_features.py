"""Feature stage speed: user features at all planned cutoffs (with labels) over ~10M simulated events,
as a ratio against one DuckDB `GROUP BY user_id` aggregate pass over the same Parquet file.

    python bench/bench_features.py [--events 10000000] [--quick] [--events-file PATH] [--repeat 3]

--events-file reuses an existing canonical events Parquet file (read only) instead of simulating one.
Baseline and feature stage run in --repeat interleaved rounds; the median ratio is the figure (the machine is noisy).

Target (issue 3): ratio <= 3x, peak memory < 4 GiB.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def generate(events: int, out: Path) -> None:
    """Simulate in a child process so its memory does not count against the feature stage."""
    code = textwrap.dedent(
        f"""
        from shopsight.simulator import SimulatorParams, generate_shop
        pilot = generate_shop(SimulatorParams(n_users=2000), {str(out / 'pilot')!r}, progress=False)
        n_users = max(200, round(2000 * {events} / pilot.n_events))
        r = generate_shop(SimulatorParams(n_users=n_users), {str(out / 'sim')!r}, progress=False)
        print(r.n_events, r.n_users)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    n_events, n_users = done.stdout.split()
    print(f"data: {int(n_events):,} events, {int(n_users):,} users")


def baseline_sql(events: Path, out: Path) -> str:
    """The baseline: one DuckDB `GROUP BY user_id` aggregate pass over the events, written to Parquet."""
    return f"""COPY (SELECT user_id, count(*) AS n, count(*) FILTER (WHERE event_type = 'purchase') AS purchases,
                      sum(price) AS spend, min(timestamp) AS first, max(timestamp) AS last, count(DISTINCT item_id) AS items
                    FROM read_parquet('{events}') GROUP BY user_id) TO '{out}' (FORMAT PARQUET)"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--quick", action="store_true", help="1M events")
    ap.add_argument("--events-file", type=Path, help="use this events Parquet file instead of simulating")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds of baseline and feature stage; the median ratio is reported")
    args = ap.parse_args()
    n = 1_000_000 if args.quick else args.events

    from shopsight.config import FeatureParams
    from shopsight.feature_sql import connection
    from shopsight.features import build_propensity_dataset

    with tempfile.TemporaryDirectory(prefix="bench_features_") as tmp:
        tmp = Path(tmp)
        if args.events_file:
            events = args.events_file.resolve()
            print(f"data: {events}")
        else:
            generate(n, tmp)
            events = tmp / "sim" / "events.parquet"
        con = connection()
        con.execute(f"SELECT count(*) FROM read_parquet('{events}')").fetchall()  # warm the file cache for both

        params = FeatureParams()
        rounds = []
        for r in range(args.repeat):  # interleaved rounds: a busy moment hits one round, not one side
            t0 = time.perf_counter()
            con.execute(baseline_sql(events, tmp / "baseline.parquet"))
            baseline_s = time.perf_counter() - t0

            t0 = time.perf_counter()
            dataset = build_propensity_dataset(events, params)
            dataset.to_parquet(tmp / "features.parquet", index=False)
            features_s = time.perf_counter() - t0
            shape = (dataset["cutoff"].nunique(), len(dataset), len(dataset.columns))
            del dataset
            rounds.append((baseline_s, features_s))
            print(f"round {r + 1}: duckdb GROUP BY user_id {baseline_s:.2f} s, feature stage {features_s:.2f} s, "
                  f"ratio {features_s / baseline_s:.2f}x")

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ratios = [f / b for b, f in rounds]
    print(f"feature stage: {shape[0]} cutoffs, {shape[1]:,} user-cutoff rows, {shape[2]} columns")
    print(f"duckdb GROUP BY user_id pass (median): {statistics.median(b for b, _ in rounds):.2f} s")
    print(f"feature stage (median): {statistics.median(f for _, f in rounds):.2f} s")
    print(f"ratio feature stage / duckdb group-by: median {statistics.median(ratios):.2f}x over {len(rounds)} rounds "
          f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x; target <= 3x)")
    print(f"peak RSS of this process: {peak:,.0f} MiB (target < 4096 MiB)")

if __name__ == "__main__":
    main()
