"""False-alarm and detection rates of the drift policy (params.yaml monitoring.policy) on the simulator.

    python bench/bench_drift_policy.py [--seeds 20] [--first-seed 300] [--quick] [--n-users 1000] [--params params.yaml]

For each scenario and seed: simulate a small shop whose drift starts on a Monday, take the champion's
reference the way the pipeline does (train-split features of the data before the drift), and run the weekly
report (monitoring/weekly.py, the same code as the flow) for the first week after the start. `none` should
not trigger (target: at most 1 in 20), every real drift should (target: at least 19 in 20). Side by side, the
naive policy "K-S p < 0.05 on each feature, share >= drift_share" on the same data shows why K-S on thousands
of rows cries wolf. The per-column score quantiles printed at the end are the evidence for the thresholds.

The thresholds in params.yaml were tuned on seeds 100-119 and 200-219, so rates on those seeds are training-set
figures. The default seeds (300-319) were never used for tuning: their rates are the held-out estimate.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitoring.weekly import build_weekly_report  # noqa: E402
from shopsight.config import FeatureParams, load_params  # noqa: E402
from shopsight.features import build_propensity_dataset, feature_columns  # noqa: E402
from shopsight.simulator import SimulatorParams, generate_shop  # noqa: E402

SCENARIOS = ["none", "new_traffic_source", "price_increase", "category_shift", "seasonal_peak"]
MUST_TRIGGER = {"new_traffic_source", "price_increase", "category_shift"}
START = pd.Timestamp("2026-01-05", tz="UTC")  # a Monday
DRIFT_DAY = 70  # a Monday: the first weekly report after the start covers [drift, drift + 7 days)
# Small windows so the reference's training cutoffs have full look-back history at a small simulated span.
BENCH_FEATURES = FeatureParams(windows_days=[7, 28], horizon_days=7, cutoff_step_days=7, n_train_cutoffs=4)
# Seeds the policy thresholds were tuned on (params.yaml monitoring.policy comments): not for reporting rates.
TUNING_SEEDS = frozenset(range(100, 120)) | frozenset(range(200, 220))
HELD_OUT_FIRST_SEED = 300


def simulate(scenario: str, seed: int, n_users: int, out: Path) -> pd.DataFrame:
    drift = (START + pd.Timedelta(days=DRIFT_DAY)).date().isoformat()
    p = SimulatorParams(seed=seed, n_users=n_users, n_items=300, days=DRIFT_DAY + 7, drift_scenario=scenario,
                        drift_start=drift, truth_cutoffs=[drift])
    result = generate_shop(p, out, progress=False)
    return pd.read_parquet(result.events_path)


def ks_naive(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], share: float) -> bool:
    from scipy.stats import ks_2samp

    drifted = sum(ks_2samp(reference[c], current[c]).pvalue < 0.05 for c in columns)
    return drifted / len(columns) >= share


def run_one(scenario: str, seed: int, n_users: int, params) -> dict:
    drift_at = START + pd.Timedelta(days=DRIFT_DAY)
    with tempfile.TemporaryDirectory() as tmp:
        events = simulate(scenario, seed, n_users, Path(tmp) / "sim")
        before = events[events["timestamp"] < drift_at]
        data = build_propensity_dataset(before, BENCH_FEATURES)
        reference = data[data["split"] == "train"]
        report = build_weekly_report(
            week_end=drift_at + pd.Timedelta(days=7), reference=reference, events=events, feature_params=BENCH_FEATURES,
            policy=params.monitoring.policy, out_root=Path(tmp) / "reports", data_start=events["timestamp"].min(),
            sources=("user_features", "event_mix"), write_html=False, seed=seed,
        )
        from shopsight.features import build_user_features

        current = build_user_features(events, drift_at + pd.Timedelta(days=7), BENCH_FEATURES)
        cols = [c for c in feature_columns(BENCH_FEATURES.windows_days) if c not in params.monitoring.policy.exclude]
        naive = ks_naive(reference, current, cols, params.monitoring.policy.drift_share)
    scores = {f"{s.source}:{c.column}": c.score for s in report.sources for c in s.columns}
    shares = {s.source: s.share for s in report.sources}
    return {"fired": report.decision.retrain, "reason": report.decision.reason, "naive": naive, "scores": scores, "shares": shares}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="5 seeds per scenario")
    ap.add_argument("--n-users", type=int, default=1000)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--scenarios", nargs="*", default=SCENARIOS)
    ap.add_argument("--first-seed", type=int, default=HELD_OUT_FIRST_SEED,
                    help="seeds are first-seed .. first-seed + seeds - 1; the default (300) starts a range never used for "
                         "tuning (the thresholds were tuned on 100-119 and 200-219: rates there are training-set figures)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    n_seeds = 5 if args.quick else args.seeds
    params = load_params(args.params)
    pol = params.monitoring.policy
    print(f"policy: numerical {pol.numerical.stattest}>={pol.numerical.threshold}, categorical {pol.categorical.stattest}>="
          f"{pol.categorical.threshold}, share {pol.drift_share}, critical {pol.critical}, exclude {pol.exclude}")
    seeds = range(args.first_seed, args.first_seed + n_seeds)
    tuned = sorted(TUNING_SEEDS.intersection(seeds))
    held_out = "held out from tuning" if not tuned else f"NOT held out: {len(tuned)} of them were used to tune the thresholds"
    print(f"simulator: {args.n_users} users, drift on day {DRIFT_DAY}, report for the first week after it; "
          f"{n_seeds} seeds ({seeds.start}-{seeds.stop - 1}, {held_out})\n")
    t0 = time.perf_counter()
    results: dict[str, list[dict]] = defaultdict(list)
    for scenario in args.scenarios:
        for seed in seeds:
            r = run_one(scenario, seed, args.n_users, params)
            results[scenario].append(r)
            print(f"  {scenario:<20} seed {seed}: {'RETRAIN' if r['fired'] else 'no action'}  ({r['reason'][:150]})", flush=True)

    print(f"\n{'scenario':<20} {'policy fired':>13} {'naive K-S fired':>16}  target")
    ok = True
    for scenario, rows in results.items():
        fired = sum(r["fired"] for r in rows)
        naive = sum(r["naive"] for r in rows)
        if scenario == "none":
            target, met = f"false alarms <= {len(rows) / 20:.0f}/{len(rows)}", fired <= len(rows) / 20
        elif scenario in MUST_TRIGGER:
            target, met = f"detections >= {np.ceil(len(rows) * 19 / 20):.0f}/{len(rows)}", fired >= np.ceil(len(rows) * 19 / 20)
        else:
            target, met = "(not required either way)", True
        ok &= met
        print(f"{scenario:<20} {fired:>6}/{len(rows):<6} {naive:>9}/{len(rows):<6}  {target} {'OK' if met else 'MISSED'}")
    if "none" in results:
        n = len(results["none"])
        print(f"\nfalse-alarm rate (none): {sum(r['fired'] for r in results['none']) / n:.2f}  "
              f"(naive K-S: {sum(r['naive'] for r in results['none']) / n:.2f})")
    for scenario in MUST_TRIGGER & set(results):
        n = len(results[scenario])
        print(f"detection rate ({scenario}): {sum(r['fired'] for r in results[scenario]) / n:.2f}")

    # Evidence for the thresholds: per-column score under no drift (max over seeds) against each drift (median).
    table = {}
    for scenario, rows in results.items():
        frame = pd.DataFrame([r["scores"] for r in rows])
        table[f"{scenario[:12]} {'max' if scenario == 'none' else 'median'}"] = frame.max() if scenario == "none" else frame.median()
    print("\nper-column drift score (none: max over seeds; drifts: median):")
    print(pd.DataFrame(table).round(3).to_string())
    # The margin of each critical column's threshold: min and max of its score per scenario over the seeds.
    print("\ncritical-column score per scenario over the seeds (min / median / max) against the threshold:")
    for source_col in sorted({k for rows in results.values() for r in rows for k in r["scores"] if k.split(":", 1)[1] in pol.critical}):
        column = source_col.split(":", 1)[1]
        threshold = (pol.per_column.get(column) or pol.categorical).threshold
        print(f"  {source_col} (threshold {threshold}):")
        for scenario, rows in results.items():
            values = pd.Series([r["scores"].get(source_col, np.nan) for r in rows])
            print(f"    {scenario:<20} min {values.min():.4f}  median {values.median():.4f}  max {values.max():.4f}  "
                  f"drifted {(values >= threshold).sum()}/{len(values)}")
    print(f"\n{sum(len(v) for v in results.values())} weekly reports in {time.perf_counter() - t0:.0f} s; targets {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
