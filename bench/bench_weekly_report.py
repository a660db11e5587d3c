"""Time of the weekly monitoring report on a large prediction log, against a baseline in the same run.

    python bench/bench_weekly_report.py [--rows 1000000] [--quick]

Writes a synthetic prediction log (shopsight/prediction_log.py format, hourly files) of --rows propensity
predictions x the default feature set (33 features: windows 7/28/84 days) over two weeks for the users of a
simulated shop, then times
  baseline: read the log with shopsight.prediction_log.read_prediction_log + per-column means with pandas;
  report:   the whole weekly report (monitoring/weekly.py: log read, served-feature + prediction drift, quality
            of matured predictions, user features at week end, event mix, HTML + JSON).
Drift sides are sampled uniformly to monitoring.policy.max_rows (50,000) rows: the normed Wasserstein distance's
sampling error at that size (printed below, from repeated samples) is far under its 0.1 threshold.
Target: report < 120 s on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitoring.weekly import build_weekly_report, read_log, week_window  # noqa: E402
from shopsight.config import FeatureParams, load_params  # noqa: E402
from shopsight.features import build_propensity_dataset, feature_columns, model_input  # noqa: E402
from shopsight.prediction_log import Prediction, PredictionLog, read_prediction_log  # noqa: E402
from shopsight.simulator import SimulatorParams, generate_shop  # noqa: E402

WEEK_END = pd.Timestamp("2026-05-04", tz="UTC")  # a Monday, 119 days after the simulator's start


def write_log(directory: Path, reference: pd.DataFrame, columns: list[str], users: np.ndarray, rows: int, seed: int = 0) -> float:
    """`rows` records spread over the report week and the week before (the one whose horizon matures)."""
    rng = np.random.default_rng(seed)
    log = PredictionLog(directory)
    x = model_input(reference, columns)
    t0 = time.perf_counter()
    batch = 2000
    start = WEEK_END - pd.Timedelta(days=14)
    for i in range(0, rows, batch):
        n = min(batch, rows - i)
        now = (start + pd.Timedelta(seconds=int(i / rows * 14 * 86400))).to_pydatetime()
        pick = rng.integers(0, len(x), n)
        probs = rng.beta(1, 6, n)
        preds = [Prediction(str(users[rng.integers(len(users))]), dict(zip(columns, x[k].tolist())), {"probability": float(p)},
                            now - timedelta(seconds=1)) for k, p in zip(pick, probs)]
        log.append("predict_propensity", "propensity:bench", preds, now=now)
    log.close()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="100,000 rows")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    rows = 100_000 if args.quick else args.rows
    params = load_params(args.params)
    fp = FeatureParams()  # the default feature set: 33 features
    columns = feature_columns(fp.windows_days)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sim = generate_shop(SimulatorParams(seed=5, n_users=3000, days=119), tmp / "sim", progress=False)
        events = pd.read_parquet(sim.events_path)
        data = build_propensity_dataset(events[events["timestamp"] < WEEK_END - pd.Timedelta(days=28)], fp)
        reference = data[data["split"] == "train"].reset_index(drop=True)
        users = events["user_id"].unique()
        seconds_write = write_log(tmp / "log", reference, columns, users, rows)
        print(f"log: {rows:,} predictions x {len(columns)} features, written in {seconds_write:.1f} s "
              f"({sum(f.stat().st_size for f in (tmp / 'log').iterdir()) / 2**20:.0f} MiB, {len(list((tmp / 'log').iterdir()))} files)")

        t0 = time.perf_counter()
        full = read_prediction_log(tmp / "log")
        means = pd.DataFrame.from_records(full["features"].tolist()).mean()
        baseline = time.perf_counter() - t0
        assert len(full) == rows and len(means) == len(columns)
        del full

        # Importing Evidently is a one-off cost per process (a Prefect worker pays it once); it is large here
        # because PYTHONDONTWRITEBYTECODE=1 makes Python recompile it on every start. Measured apart.
        t0 = time.perf_counter()
        import evidently.presets  # noqa: F401
        from evidently import Report  # noqa: F401
        print(f"(one-off import of Evidently: {time.perf_counter() - t0:.1f} s, not in the figures below)")

        start, end = week_window(WEEK_END)
        # the events the weekly job loads (run_weekly_monitoring): look-back before the week's end, event reference
        first = min(WEEK_END - pd.Timedelta(days=fp.lookback_days),
                    reference["cutoff"].max() - pd.Timedelta(days=params.monitoring.policy.reference_event_days))
        t0 = time.perf_counter()
        log = read_log(tmp / "log", start - (fp.horizon_days + 7) * pd.Timedelta(days=1), end)
        t_read = time.perf_counter() - t0
        ref_pred = np.random.default_rng(1).beta(1, 6, len(reference))
        report = build_weekly_report(
            week_end=WEEK_END, reference=reference, events=events[events["timestamp"] >= first], feature_params=fp, policy=params.monitoring.policy,
            out_root=tmp / "reports", prediction_log=log, reference_predictions=ref_pred, champion_score=0.8,
            data_start=events["timestamp"].min(),
        )
        seconds = time.perf_counter() - t0
        served = next(s for s in report.sources if s.source == "served")
        print(f"\nbaseline (read_prediction_log + per-column means): {baseline:7.1f} s")
        print(f"weekly report (log read {t_read:.1f} s + {report.seconds}): {seconds:7.1f} s")
        print(f"ratio report / baseline: {seconds / baseline:.2f}")
        print(f"served rows in the week: {len(log[log['timestamp'] >= start]):,}; drift sides sampled to {params.monitoring.policy.max_rows:,} "
              f"(sampled={served.sampled}); quality on {report.quality.rows:,} matured predictions (not sampled)")
        print(f"decision: {'retrain' if report.decision.retrain else 'no action'} ({report.decision.reason[:120]})")
        print(f"target < 120 s: {'met' if seconds < 120 else 'NOT met'}")

        # soundness of sampling: spread of the normed Wasserstein distance over repeated 50k samples of the week
        from scipy.stats import wasserstein_distance

        week = np.expm1(log.loc[log["timestamp"] >= start, [f"features.{c}" for c in columns[:5]]].to_numpy())
        ref = reference[columns[:5]].to_numpy()
        n = params.monitoring.policy.max_rows
        rng = np.random.default_rng(0)
        for j, c in enumerate(columns[:5]):
            full_d = wasserstein_distance(ref[:, j], week[:, j]) / (ref[:, j].std() or 1)
            sub = [wasserstein_distance(ref[:, j], week[rng.choice(len(week), min(n, len(week)), replace=False), j]) / (ref[:, j].std() or 1)
                   for _ in range(5)]
            print(f"  {c:<22} all rows {full_d:.4f}; 5 samples of {min(n, len(week)):,}: {np.mean(sub):.4f} +- {np.std(sub):.4f} (threshold 0.1)")


if __name__ == "__main__":
    main()
