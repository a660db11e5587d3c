"""Where the feature stage's time goes, against the baseline of bench/bench_features.py (one DuckDB
`GROUP BY user_id` pass), and what an exact version of these features cannot avoid.

    python bench/bench_feature_floor.py [--events 10000000] [--events-file PATH] [--repeat 3]

Exact per-window counts of distinct sessions and distinct items need one hash aggregation of the events by
(user, session, day) and one by (user, item); both are timed here with nothing but count(*) (the floor), and
as the stage runs them (with the aggregates the features use). Writing the stage's result and the whole stage
are timed too. Every figure is the median over interleaved rounds, printed as a ratio to the baseline measured
in the same rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_features import baseline_sql, generate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--events-file", type=Path, help="use this events Parquet file instead of simulating")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from shopsight.config import FeatureParams
    from shopsight.feature_sql import NS_PER_DAY, connection, event_passes, plan_batches
    from shopsight.features import build_propensity_dataset, propensity_cutoffs

    with tempfile.TemporaryDirectory(prefix="bench_floor_") as tmp:
        tmp = Path(tmp)
        events = args.events_file.resolve() if args.events_file else None
        if events is None:
            generate(args.events, tmp)
            events = tmp / "sim" / "events.parquet"
        params = FeatureParams()
        (plan,) = plan_batches(list(propensity_cutoffs(events, params)), params.windows_days)
        source = f"read_parquet('{events}')"
        (pass_a, _), (pass_b, b_params) = event_passes(plan, source, params.horizon_days)
        pass_b_categories = pass_b.replace("item_id AS i, ", "").replace("SELECT u, i, c,", "SELECT u, c,")
        assert pass_b_categories.count(" i,") == 0 and pass_b_categories != pass_b, "pass B's SQL changed: update this bench"
        span = f"FROM {source} WHERE timestamp >= '{plan.lo.isoformat()}'::TIMESTAMPTZ"
        day = f"(epoch_ns(timestamp) - {plan.lo.value}) // {NS_PER_DAY}"
        con = connection()
        con.execute(f"SELECT count(*) FROM {source}").fetchall()  # warm the file cache
        dataset = build_propensity_dataset(events, params)

        def sql(query: str, query_params: dict | None = None):
            return lambda: con.execute(query, query_params)

        steps = {
            "baseline: GROUP BY user_id": sql(baseline_sql(events, tmp / "baseline.parquet")),
            "floor: hash (user, session, day), count(*) only": sql(f"CREATE OR REPLACE TEMP TABLE f AS SELECT user_id, session_id, {day} AS d, count(*) {span} GROUP BY ALL"),
            "floor: hash (user, item), count(*) only": sql(f"CREATE OR REPLACE TEMP TABLE f AS SELECT user_id, item_id, count(*) {span} GROUP BY ALL"),
            "stage pass A: (user, session, day) with its 12 aggregates": sql(pass_a),
            "stage pass B: (user, item, category) with segment masks": sql(pass_b, b_params),
            "pass B without items: (user, category) with segment masks": sql(pass_b_categories, b_params),
            f"writing the result ({len(dataset):,} rows x {len(dataset.columns)} columns)": lambda: dataset.to_parquet(tmp / "out.parquet", index=False),
            "whole feature stage (build + write)": lambda: build_propensity_dataset(events, params).to_parquet(tmp / "out.parquet", index=False),
        }
        times: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(args.repeat):
            for name, run in steps.items():
                t0 = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t0)
        for t in ("f", "_feat_a", "_feat_b"):
            con.execute(f"DROP TABLE IF EXISTS {t}")

    base = times["baseline: GROUP BY user_id"]
    ratio = {name: statistics.median(a / b for a, b in zip(ts, base)) for name, ts in times.items()}
    for name, ts in times.items():
        print(f"{name:<66} {statistics.median(ts):6.2f} s  {ratio[name]:5.2f}x")
    names = list(steps)
    floor = ratio[names[1]] + ratio[names[2]]
    passes = ratio[names[3]] + ratio[names[4]]
    write = ratio[names[6]]
    rest = ratio[names[7]] - passes - write
    print(f"the two hash aggregations alone: {floor:.2f}x; as the stage runs them: {passes:.2f}x; "
          f"plus writing the result: {passes + write:.2f}x, leaving {max(0.0, 3 - passes - write):.2f}x of the 3x target "
          f"for the rollup, the per-window distinct counts and the assembly, which take {rest:.2f}x in the stage")
    print(f"without the distinct-items feature (pass B on (user, category) only) the stage would be about "
          f"{ratio[names[7]] - ratio[names[4]] + ratio[names[5]]:.2f}x")


if __name__ == "__main__":
    main()
