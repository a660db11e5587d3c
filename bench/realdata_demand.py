"""Demand forecasting on a real shop (UCI Online Retail II, 2009-12..2010-12), through the normal pipeline.

In a temporary project under `workdir`: ingest the Online Retail II file (cancellations become
`remove_from_cart`, netted against the same customer's earlier purchases), train every candidate of
`demand.candidates` (the champion chosen on validation item WAPE), evaluate all of them on the test window, and
time the service forecasting with the champion (a statistical champion fits each requested series on its
history at request time). Returns a Markdown table: every candidate's valid and test item WAPE / MASE and
category WAPE, the champion marked, fit time, the Keras epoch time, and the "done when" verdict (the champion
beats seasonal naive and the best statsforecast method on test item WAPE and item MASE). The all-zero
forecast scores item WAPE 1.0 by definition: any row above 1.0 is worse than forecasting nothing.

    nice -n 10 timeout 3000 .venv/bin/python bench/realdata_demand.py [--realdata ../shared/realdata] [--workdir /tmp/x]

The lead wires `run` into bench/bench_realdata.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

FILE = Path("online_retail_ii") / "online_retail_ii_2009_2010.parquet"


def _params(realdata_file: Path):
    from shopsight.config import Params, load_params

    repo = Path(__file__).resolve().parents[1]
    raw = load_params(repo / "params.yaml").model_dump()
    raw["data"] = {**raw["data"], "source": "online_retail", "path": str(realdata_file), "options": {}}
    return Params.model_validate(raw)


def measure(realdata_file: Path, project: Path) -> dict:
    """Ingest -> train demand -> evaluate demand in `project`; the metrics, with timings and the serving cost."""
    import numpy as np

    from shopsight.demand import DEMAND_DIR, DemandRequest, DemandScorer, evaluate_demand, train_demand
    from shopsight.ingest import ingest

    params = _params(realdata_file)
    project.mkdir(parents=True, exist_ok=True)
    timings = {}
    with contextlib.chdir(project):
        t0 = time.perf_counter()
        ingest(params)
        timings["ingest_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        train_demand(params)
        timings["train_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        metrics = evaluate_demand(params)
        timings["evaluate_s"] = time.perf_counter() - t0
        scorer = DemandScorer(DEMAND_DIR)
        rng = np.random.default_rng(0)
        days = params.demand.serving_history_days
        requests = [DemandRequest(series_id=f"s{i}", level="item", history=rng.poisson(0.5, days).astype(float).tolist()) for i in range(100)]
        scorer.forecast(requests[:1], "warm-up")
        t0 = time.perf_counter()
        for r in requests[:20]:
            scorer.forecast([r], "bench")
        one_ms = (time.perf_counter() - t0) / 20 * 1000
        t0 = time.perf_counter()
        scorer.forecast(requests, "bench")
        batch_ms = (time.perf_counter() - t0) * 1000
    metrics["bench"] = {"timings": timings, "load_average": os.getloadavg(), "serving_ms_one_request": one_ms,
                        "serving_ms_batch_of_100": batch_ms, "serving_history_days": days}
    (project / "bench_metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    return metrics


def _f(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def table(metrics: dict) -> str:
    """The Markdown table of every candidate, the champion marked, and the verdict."""
    champion, fit = metrics["champion"], metrics["fit"]
    lines = [f"### Online Retail II demand (valid {metrics['valid_window'][0]}..{metrics['valid_window'][1]}, test "
             f"{metrics['test_window'][0]}..{metrics['test_window'][1]}, {metrics['n_series']['item']} item series, "
             f"{metrics['horizon_days']}-day horizon, net of returns)", "",
             "| candidate | family | valid item WAPE | valid item MASE | test item WAPE | test item MASE | test category WAPE | fit + valid forecast |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in metrics["test"].items():
        v = metrics["valid"][name]
        mark = " **champion**" if name == champion else ""
        f = fit.get(name, {})
        extra = f" ({f['epochs']} epochs, {f['epoch_s']:.1f} s/epoch)" if "epoch_s" in f else ""
        lines.append(f"| {name}{mark} | {f.get('family', '-')} | {_f(v['wape'])} | {_f(v['mase'])} | {_f(row['wape'])} | "
                     f"{_f(row['mase'])} | {_f(row['wape_category'])} | {f.get('fit_s', 0) + f.get('predict_s', 0):.1f} s{extra} |")
    t, tm = metrics["targets"], metrics["targets_mase"]
    lines += ["", f"Best statsforecast method (on validation): {metrics['best_statsforecast']}. "
              f"Item WAPE target: {t['note']}. Item MASE target: {tm['note']}. "
              f"Done when (beats every reference on both): {'met' if metrics['done_when']['met'] else 'NOT MET'}."]
    b = metrics.get("bench")
    if b:
        lines.append(f"Serving ({champion}, {b['serving_history_days']}-day histories): {b['serving_ms_one_request']:.1f} ms for one "
                     f"request, {b['serving_ms_batch_of_100']:.0f} ms for a batch of 100. Timings: "
                     + ", ".join(f"{k} {v:.0f} s" for k, v in b["timings"].items())
                     + f"; load average {', '.join(f'{x:.1f}' for x in b['load_average'])} on a shared 2-core box.")
    return "\n".join(lines)


def run(realdata_dir: Path, workdir: Path) -> str:
    """The Markdown result on Online Retail II, or a line saying why it was skipped."""
    file = Path(realdata_dir) / FILE
    if not file.exists():
        return f"demand (Online Retail II): skipped, {file} not found (see ../shared/realdata/README.md)"
    return table(measure(file, Path(workdir) / "online_retail_demand"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realdata", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "realdata")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.workdir is None:
        with tempfile.TemporaryDirectory(prefix="demand-bench-") as tmp:
            print(run(args.realdata, Path(tmp)))
    else:
        print(run(args.realdata, args.workdir))


if __name__ == "__main__":
    main()
